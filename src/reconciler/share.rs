//! The sweep's share of Plane's request budget (F-2's Plane side and the level sync).
//!
//! Every Plane request, the dispatcher's and the sweep's, waits for a slot of one client paced
//! at `plane.requests_per_minute`, first come, first served. A sweep paging through a large
//! project asks for slots back to back and would queue the effects owed to Plane behind all
//! its reads. So while Plane effects wait in the outbox, the sweep takes a turn at most every
//! other slot: its Plane side and the level sync together use at most half of the budget, and
//! the dispatcher always has the other half. With nothing owed, polling runs at the client's
//! own pace.

use std::time::Duration;

use tokio::time::Instant;

pub(super) struct PlaneShare {
    /// Two of the client's slots: the sweep takes one, the dispatcher keeps the other.
    spacing: Duration,
    next: tokio::sync::Mutex<Option<Instant>>,
}

impl PlaneShare {
    pub(super) fn new(requests_per_minute: u32) -> PlaneShare {
        PlaneShare {
            spacing: Duration::from_secs(60) / requests_per_minute.max(1) * 2,
            next: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits for the sweep's next turn when Plane effects are waiting; at once otherwise.
    pub(super) async fn turn(&self, effects_waiting: bool) {
        if !effects_waiting {
            return;
        }
        let until = {
            let mut next = self.next.lock().await;
            let (slot, after) = next_turn(*next, Instant::now(), self.spacing);
            *next = Some(after);
            slot
        };
        tokio::time::sleep_until(until).await;
    }
}

/// The sweep's turn (no earlier than `now`, no earlier than the turn after the last) and the
/// one after it.
fn next_turn(next: Option<Instant>, now: Instant, spacing: Duration) -> (Instant, Instant) {
    let slot = next.map_or(now, |n| n.max(now));
    (slot, slot + spacing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_two_client_slots_apart_and_never_in_the_past() {
        // 60 requests a minute: a slot per second, a turn for the sweep every two.
        let share = PlaneShare::new(60);
        assert_eq!(share.spacing, Duration::from_secs(2));
        let t0 = Instant::now();
        let mut next = None;
        let mut turns = Vec::new();
        for _ in 0..5 {
            // The sweep asks again at once: five asks within the same instant.
            let (slot, after) = next_turn(next, t0, share.spacing);
            turns.push(slot.duration_since(t0).as_secs());
            next = Some(after);
        }
        assert_eq!(turns, [0, 2, 4, 6, 8]);
        // After a pause longer than a turn, the next turn is now, not in the past.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(next_turn(next, later, share.spacing).0, later);
    }
}
