//! cloud-hub: the central service.
//!
//! Data path: `ingest` (gRPC streams from gateways) -> `storage` (PostgreSQL /
//! TimescaleDB, the only module with SQL) -> `api` (REST for central ops).

pub mod aas;
pub mod alarms;
pub mod analytics;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod calibration;
pub mod certificates;
pub mod cli;
pub mod config;
pub mod desired;
pub mod exports;
pub mod idempotency;
pub mod identity;
pub mod ingest;
pub mod lab;
pub mod leader;
pub mod live;
pub mod metric_names;
pub mod models;
pub mod nonconformance;
pub mod push;
pub mod reports;
pub mod runs;
pub mod storage;
pub mod tls;
pub mod translog;
pub mod twins;
pub mod webhooks;
pub mod wire;
