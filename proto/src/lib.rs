//! Generated Rust types for the `qi.uplink.v1` gRPC contract (see `v1/uplink.proto`).

pub mod uplink {
    pub mod v1 {
        tonic::include_proto!("qi.uplink.v1");
    }
}

pub use uplink::v1;
