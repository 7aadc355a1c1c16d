//! The simulated PV rig on real sockets (issue #14): the real `pv-rig-sim`
//! binary at time scale 1000, driven as the agent will drive it: a Modbus TCP
//! client writing the chamber setpoint by the firmware profile, the Keithley
//! 2450 IV sweep sequence over a raw SCPI socket, and the control port.
// qi-test: tier-independent (the PV rig simulator alone): scripts/test.sh runs it once, on tier none.

use anyhow::{Context, Result, ensure};
use e2e_tests::pv_rig::{ProfilePoint, RigSim, Scpi};
use std::time::Duration;

const TIME_SCALE: &str = "1000";
const DEGRADATION_PER_CYCLE_PCT: f64 = 2.0;
/// The chamber's default ramp limit (Cel/min of simulated time).
const MAX_RAMP_PER_MIN: f64 = 3.0;

fn num(state: &serde_json::Value, path: &str) -> Result<f64> {
    let mut v = state;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_f64()
        .with_context(|| format!("state has no number at {path}: {state}"))
}

/// Isc, Voc and Pmax of the sweep the agent runs, computed from the reply
/// alone (generating current is negative on the 2450: flipped here).
async fn sweep(smu: &mut Scpi, points: usize) -> Result<(f64, f64, f64)> {
    for cmd in [
        "*CLS".to_string(),
        ":SOUR:FUNC VOLT".into(),
        ":SENS:FUNC \"CURR\"".into(),
        ":SENS:CURR:RANG:AUTO ON".into(),
        format!(":SOUR:SWE:VOLT:LIN -0.5, 60, {points}"),
        ":INIT".into(),
        "*WAI".into(),
    ] {
        smu.send(&cmd).await?;
    }
    let reply = smu
        .query(
            &format!(":TRAC:DATA? 1, {points}, \"defbuffer1\", SOUR, READ"),
            Duration::from_secs(30),
        )
        .await?
        .context("no reply to :TRAC:DATA?")?;
    let nums = reply
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<Vec<f64>, _>>()
        .with_context(|| format!("reply is not numbers: {}", &reply[..reply.len().min(200)]))?;
    ensure!(
        nums.len() == 2 * points,
        "{} numbers for {points} points",
        nums.len()
    );
    ensure!(
        nums[1] < 0.0,
        "the generating quadrant reads negative, got {}",
        nums[1]
    );
    let curve: Vec<(f64, f64)> = nums.chunks(2).map(|c| (c[0], -c[1])).collect();
    let mut isc = None;
    let mut voc = None;
    for w in curve.windows(2) {
        let ((v0, i0), (v1, i1)) = (w[0], w[1]);
        if isc.is_none() && v0 <= 0.0 && v1 >= 0.0 {
            isc = Some(i0 + (i1 - i0) * (0.0 - v0) / (v1 - v0));
        }
        if voc.is_none() && i0 >= 0.0 && i1 < 0.0 {
            voc = Some(v0 + (v1 - v0) * i0 / (i0 - i1));
        }
    }
    let pmax = curve.iter().map(|(v, i)| v * i).fold(f64::MIN, f64::max);
    let count: u32 = smu
        .query(":SYST:ERR:COUN?", Duration::from_secs(5))
        .await?
        .context("no error count")?
        .parse()?;
    ensure!(count == 0, "the sweep left {count} errors");
    Ok((isc.context("no Isc")?, voc.context("no Voc")?, pmax))
}

/// Waits until the state satisfies `check`, checking on every sample that the
/// chamber air never moved faster than its ramp limit.
async fn watch(
    rig: &RigSim,
    what: &str,
    deadline: Duration,
    check: impl Fn(&serde_json::Value) -> Result<bool>,
) -> Result<serde_json::Value> {
    let start = std::time::Instant::now();
    let mut prev: Option<(f64, f64)> = None;
    loop {
        let s = rig.state().await?;
        let (t, temp) = (num(&s, "sim_time_s")?, num(&s, "chamber.temperature")?);
        if let Some((t0, temp0)) = prev
            && t > t0
        {
            let rate = (temp - temp0).abs() / (t - t0) * 60.0;
            ensure!(
                rate <= MAX_RAMP_PER_MIN * 1.001,
                "chamber moved at {rate:.3} Cel/min between t={t0} and t={t}"
            );
        }
        prev = Some((t, temp));
        if check(&s)? {
            return Ok(s);
        }
        ensure!(
            start.elapsed() < deadline,
            "timed out waiting for {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pv_rig_sim_on_real_sockets() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let degradation = DEGRADATION_PER_CYCLE_PCT.to_string();
    let rig = RigSim::start(
        &dir.path().join("pv-rig-sim.log"),
        &[
            "--time-scale",
            TIME_SCALE,
            "--degradation-per-thermal-cycle-pct",
            &degradation,
        ],
    )
    .await?;
    let result = scenario(&rig).await;
    if result.is_err() {
        eprintln!("pv-rig-sim log:\n{}", rig.proc.log_tail(40));
    }
    result
}

async fn scenario(rig: &RigSim) -> Result<()> {
    let state = rig.state().await?;
    let rated = num(&state, "module.pmax_stc_w")?;
    ensure!((rated - 400.0).abs() < 2.0, "new module's Pmax {rated}");

    // An STC sweep (25 Cel, 1000 W/m2) measures what the state reports.
    let mut smu = rig.scpi().await?;
    let idn = smu.query("*IDN?", Duration::from_secs(5)).await?;
    ensure!(
        idn.as_deref().is_some_and(|s| s.contains("MODEL 2450")),
        "{idn:?}"
    );
    let (isc, voc, pmax) = sweep(&mut smu, 200).await?;
    ensure!((isc - 10.4).abs() < 0.05, "Isc {isc}");
    ensure!((voc - 49.0).abs() < 0.2, "Voc {voc}");
    ensure!(
        (pmax - rated).abs() / rated < 0.005,
        "Pmax {pmax} vs {rated}"
    );
    // The longest sweep the contract allows, in one line.
    let (_, _, long_pmax) = sweep(&mut smu, 10_000).await?;
    ensure!(
        (long_pmax - rated).abs() / rated < 0.005,
        "10000-point Pmax {long_pmax}"
    );

    // The supply, the bias and the insulation tester by their profiles.
    let mut supply = rig.modbus_unit(3).await?;
    ProfilePoint::new("dc-supply", "current_setpoint")?
        .write(&mut supply, 5.0)
        .await?;
    let current = ProfilePoint::new("dc-supply", "current")?
        .read(&mut supply)
        .await?;
    let volts = ProfilePoint::new("dc-supply", "voltage")?
        .read(&mut supply)
        .await?;
    let open = ProfilePoint::new("dc-supply", "open_circuit")?
        .read(&mut supply)
        .await?;
    ensure!(
        current == 5.0 && volts > 40.0 && volts < 80.0 && open == 0.0,
        "supply: {current} A at {volts} V, open circuit {open}"
    );
    ProfilePoint::new("dc-supply", "current_setpoint")?
        .write(&mut supply, 0.0)
        .await?;
    let mut hipot = rig.modbus_unit(5).await?;
    let test_v = ProfilePoint::new("insulation-tester", "test_voltage_setpoint")?;
    let resistance = ProfilePoint::new("insulation-tester", "resistance")?;
    test_v.write(&mut hipot, 1000.0).await?;
    watch(rig, "an insulation result", Duration::from_secs(30), |s| {
        Ok(num(s, "hipot.resistance")? > 0.0)
    })
    .await?;
    test_v.write(&mut hipot, 0.0).await?;
    let r = resistance.read(&mut hipot).await?;
    ensure!(r == 2000.0, "dry insulation {r} MOhm");
    let breakdown = ProfilePoint::new("insulation-tester", "breakdown")?
        .read(&mut hipot)
        .await?;
    ensure!(breakdown == 0.0, "breakdown {breakdown}");
    // A setpoint the device cannot take is refused whole.
    let mut chamber = rig.modbus_unit(1).await?;
    let setpoint = ProfilePoint::new("binder-kmf115", "temperature_setpoint")?;
    ensure!(
        setpoint.write(&mut chamber, 500.0).await.is_err(),
        "500 Cel accepted"
    );
    ensure!(setpoint.read(&mut chamber).await? == 25.0);

    // The chamber setpoint written over Modbus by the profile, as the agent
    // writes it; the air and the module follow at the limited ramp.
    let chamber_t = ProfilePoint::new("binder-kmf115", "temperature")?;
    let module_t = ProfilePoint::new("pv-rig-daq", "module_temperature")?;
    let irradiance = ProfilePoint::new("pv-rig-daq", "irradiance")?;
    let mut daq = rig.modbus_unit(2).await?;
    let g = irradiance.read(&mut daq).await?;
    ensure!((g - 1000.0).abs() < 5.0, "irradiance {g}");
    setpoint.write(&mut chamber, -45.0).await?;
    let back = setpoint.read(&mut chamber).await?;
    ensure!(back == -45.0, "setpoint reads back {back}");
    let first = chamber_t.read(&mut chamber).await?;
    watch(
        rig,
        "the module below -35 Cel",
        Duration::from_secs(120),
        |s| {
            let (c, m) = (
                num(s, "chamber.temperature")?,
                num(s, "module.temperature")?,
            );
            ensure!(
                m >= c - 1e-9,
                "the module ({m}) cannot be colder than the air ({c}) while cooling"
            );
            Ok(m < -35.0)
        },
    )
    .await?;
    let air = chamber_t.read(&mut chamber).await?;
    let module = module_t.read(&mut daq).await?;
    ensure!(air < first && air >= -45.0, "chamber air {first} -> {air}");
    ensure!(
        module < -35.0 && module >= air,
        "module {module}, air {air}"
    );

    // A silenced chamber leaves its requests unanswered; the DAQ behind the
    // same gateway still answers; `answer` brings it back.
    ensure!(rig.control("silence chamber").await? == "ok");
    let mut silent = rig.modbus_unit(1).await?;
    let timed_out = tokio::time::timeout(Duration::from_secs(2), chamber_t.read(&mut silent)).await;
    ensure!(
        timed_out.is_err(),
        "a silenced chamber answered: {timed_out:?}"
    );
    let mut daq2 = rig.modbus_unit(2).await?;
    module_t
        .read(&mut daq2)
        .await
        .context("the DAQ stopped answering too")?;
    ensure!(rig.control("answer chamber").await? == "ok");
    let mut chamber = rig.modbus_unit(1).await?;
    chamber_t
        .read(&mut chamber)
        .await
        .context("the chamber did not come back")?;
    ensure!(rig.control("silence oven").await?.starts_with("error:"));
    // The SMU too: silenced, a query gets nothing; answering again, it replies.
    ensure!(rig.control("silence smu").await? == "ok");
    ensure!(
        smu.query("*IDN?", Duration::from_millis(500))
            .await?
            .is_none()
    );
    ensure!(rig.control("answer smu").await? == "ok");
    ensure!(smu.query("*IDN?", Duration::from_secs(5)).await?.is_some());

    // Hot: one full thermal cycle is counted and costs its degradation.
    setpoint.write(&mut chamber, 90.0).await?;
    let s = watch(
        rig,
        "one counted thermal cycle",
        Duration::from_secs(120),
        |s| Ok(num(s, "stress.thermal_cycles")? >= 1.0),
    )
    .await?;
    ensure!(num(&s, "stress.thermal_cycles")? == 1.0, "{s}");
    let degraded = num(&s, "module.pmax_stc_w")?;
    let want = rated * (1.0 - DEGRADATION_PER_CYCLE_PCT / 100.0);
    ensure!(
        (degraded - want).abs() / want < 0.001,
        "Pmax {degraded}, want {want}"
    );

    // Back at 25 Cel, an STC sweep measures the degraded Pmax.
    setpoint.write(&mut chamber, 25.0).await?;
    watch(
        rig,
        "the module back at 25 Cel",
        Duration::from_secs(120),
        |s| Ok((num(s, "module.temperature")? - 25.0).abs() < 0.3),
    )
    .await?;
    let (_, _, pmax) = sweep(&mut smu, 200).await?;
    ensure!(
        (pmax - degraded).abs() / degraded < 0.005,
        "swept {pmax} vs state {degraded}"
    );
    let s = rig.state().await?;
    ensure!(num(&s, "counters.modbus_unanswered")? >= 1.0, "{s}");
    Ok(())
}
