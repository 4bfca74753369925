//! orch: a delivery-pipeline orchestrator that heals itself when webhooks get lost.
//!
//! See `ARCHITECTURE.md` for the codemap.

pub mod clock;
pub mod secret;
pub mod http_client;
