//! SCPI instruments and ASCII-protocol rigs (line-oriented request/response).

pub mod line;
pub mod poller;
