//! Simulated instruments for development, tests and the demo: `instrument-sim`
//! serves one firmware profile's registers, `pv-rig-sim` a whole PV test rig
//! (chamber, DAQ, supplies, insulation tester, SMU) with shared physics.

pub mod fleet;
pub mod register_map;
pub mod rig;
