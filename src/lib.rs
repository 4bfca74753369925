//! orch: a delivery-pipeline orchestrator that heals itself when webhooks get lost.
//!
//! See `ARCHITECTURE.md` for the codemap.

// A `pub` item no one outside can reach is dead weight the compiler cannot point at.
#![warn(unreachable_pub)]

pub mod agent;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod duration;
pub mod git;
pub mod http;
pub mod http_client;
pub mod impact;
pub mod inbox;
pub mod integrations;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod policy;
pub mod reconciler;
pub mod report;
pub mod secret;
pub mod service;
pub mod sim;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod worker;
