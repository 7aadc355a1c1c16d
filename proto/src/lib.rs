//! Generated Rust types for the `qi.uplink.v1` gRPC contract (see `v1/uplink.proto`).

pub mod uplink {
    pub mod v1 {
        tonic::include_proto!("qi.uplink.v1");
    }
}

pub use uplink::v1;

impl v1::RunEventKind {
    /// The kind as the gateway's API and the hub's database name it
    /// (`step_started`, `safe_state_applied`, ...), one definition for both.
    pub fn name(self) -> &'static str {
        use v1::RunEventKind as K;
        match self {
            K::Unspecified => "unspecified",
            K::Started => "started",
            K::StepStarted => "step_started",
            K::StepFinished => "step_finished",
            K::Paused => "paused",
            K::Resumed => "resumed",
            K::Interrupted => "interrupted",
            K::SafeStateApplied => "safe_state_applied",
            K::Completed => "completed",
            K::Aborted => "aborted",
            K::Failed => "failed",
        }
    }
}

/// Bounds both ends of the uplink agree on.
pub mod limits {
    /// The highest sequence number the hub stores (PostgreSQL `bigint`).
    pub const SEQ_MAX: u64 = i64::MAX as u64;

    /// The highest sequence an agent takes from the hub's word
    /// (`Welcome.highest_committed_seq`) when the hub holds more than its
    /// buffer has handed out. Half the range: a gateway numbering from the
    /// clock in nanoseconds (a replaced buffer) stays below it for
    /// centuries, and anything above it is forged or broken. What is left
    /// above it is room no gateway can use up.
    pub const SEQ_PLAUSIBLE_MAX: u64 = SEQ_MAX / 2;

    /// Readings stamped further than this in the future are refused, by the
    /// agent when a device sends one and by the hub in a batch.
    pub const MAX_FUTURE_SKEW_S: i64 = 86_400;

    /// Longest gateway id, device id or metric name, in bytes (UTF-8).
    pub const MAX_ID_LEN: usize = 128;
    /// Longest unit, in bytes.
    pub const MAX_UNIT_LEN: usize = 32;

    /// Most readings in one batch (`uplink.batch_max` at most).
    pub const MAX_BATCH_READINGS: usize = 50_000;
    /// Longest run id: a hyphenated UUID.
    pub const RUN_ID_LEN: usize = 36;
    /// Largest encoded reading: two ids, a unit, a run id and series, and
    /// the numbers with their field tags and lengths.
    pub const MAX_READING_BYTES: usize = 3 * MAX_ID_LEN + MAX_UNIT_LEN + RUN_ID_LEN + 56;
    /// Largest batch message the hub takes (tonic's default of 4 MiB would
    /// refuse a full batch of ordinary readings, and the agent would resend
    /// it forever).
    pub const MAX_BATCH_BYTES: usize = MAX_BATCH_READINGS * (MAX_READING_BYTES + 4)
        + MAX_BATCH_RUN_EVENTS * (MAX_TEMPLATE_BYTES + 16 * 1024)
        + 1024;

    /// Largest protocol template a run carries (`RunStart.template_toml`).
    pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
    /// Most run events in one batch; with their templates they fit in the
    /// batch bound.
    pub const MAX_BATCH_RUN_EVENTS: usize = 64;
    /// Most benches one gateway describes in its Hello.
    pub const MAX_HELLO_BENCHES: usize = 256;
    /// Most devices one gateway describes in its Hello.
    pub const MAX_HELLO_DEVICES: usize = 4096;
    /// Most points one device (firmware profile) describes.
    pub const MAX_DEVICE_POINTS: usize = 1024;
    /// Longest free text of a device or point description (manufacturer,
    /// model, description), in bytes.
    pub const MAX_TEXT_LEN: usize = 512;
    /// Most runs one `HubMessage.run_verdicts` describes (the newest that
    /// ended within `RUN_VERDICT_DAYS`): with every text at its limit the
    /// message stays under 1 MiB.
    pub const MAX_RUN_VERDICTS: usize = 200;
    /// How far back the hub looks for a gateway's ended runs to tell it of.
    pub const RUN_VERDICT_DAYS: u32 = 30;

    /// Free text the hub stores (names, descriptions): at most
    /// `MAX_TEXT_LEN` bytes, no control characters.
    pub fn valid_text(s: &str) -> bool {
        s.len() <= MAX_TEXT_LEN && !s.chars().any(char::is_control)
    }

    /// A gateway id, device id or metric name the hub stores: 1 to
    /// `MAX_ID_LEN` bytes, no control characters.
    pub fn valid_id(s: &str) -> bool {
        !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
    }

    /// A unit the hub stores: at most `MAX_UNIT_LEN` bytes, no control characters.
    pub fn valid_unit(s: &str) -> bool {
        s.len() <= MAX_UNIT_LEN && !s.chars().any(char::is_control)
    }
}
