//! Analytics computations over stored series: gap filling, LTTB
//! downsampling, window statistics with a linear trend, rolling z-score and
//! EWMA anomalies. Pure functions, tested alone; the HTTP endpoints that use
//! them are in `crate::api`.

pub mod math;
