//! A firmware profile's Modbus register map, served from values someone else
//! computes: `instrument-sim` serves its `sim` tables through it, `pv-rig-sim`
//! its physics. Both encode with `device_profile`, the agent decodes with the
//! same crate and the same profile file, so the two sides cannot disagree on
//! addresses, types or word order.

use device_profile::{
    DataType, Decoded, ModbusDefaults, Profile, RegisterKind, encode, encode_text,
};
use std::collections::HashMap;
use tokio_modbus::{ExceptionCode, Request, Response};

pub struct RegisterMap {
    pub profile: Profile,
    defaults: ModbusDefaults,
    /// point index -> 10^(its scale-factor point's `sim.base`), SunSpec style.
    sf_scale: HashMap<usize, f64>,
    /// Per register kind: (first address, last address, point index), sorted.
    spans: HashMap<RegisterKind, Vec<(u32, u32, usize)>>,
}

impl RegisterMap {
    pub fn new(profile: Profile) -> RegisterMap {
        let sf_scale = profile
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let sf = p.scale_factor.as_ref()?;
                let sfp = profile.points.iter().find(|q| &q.name == sf)?;
                Some((i, 10f64.powi(sfp.sim.base as i32)))
            })
            .collect();
        let mut spans: HashMap<RegisterKind, Vec<(u32, u32, usize)>> = HashMap::new();
        for (i, p) in profile.points.iter().enumerate() {
            if let Some(l) = p.modbus() {
                spans.entry(l.register).or_default().push((
                    u32::from(l.address),
                    l.end_address(),
                    i,
                ));
            }
        }
        for v in spans.values_mut() {
            v.sort();
        }
        RegisterMap {
            defaults: profile.modbus_defaults(),
            profile,
            sf_scale,
            spans,
        }
    }

    /// Answers one request: reads take each point's value from `read` (by
    /// point index), writes hand a writable point's decoded value to `write`.
    pub fn serve(
        &self,
        request: Request<'_>,
        read: &mut dyn FnMut(usize) -> f64,
        write: &mut dyn FnMut(usize, f64) -> Result<(), ExceptionCode>,
    ) -> Result<Response, ExceptionCode> {
        use RegisterKind::*;
        match request {
            Request::ReadInputRegisters(a, q) => self
                .read_registers(Input, a, q, read)
                .map(Response::ReadInputRegisters),
            Request::ReadHoldingRegisters(a, q) => self
                .read_registers(Holding, a, q, read)
                .map(Response::ReadHoldingRegisters),
            Request::ReadCoils(a, q) => self.read_bits(Coil, a, q, read).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, q) => self
                .read_bits(Discrete, a, q, read)
                .map(Response::ReadDiscreteInputs),
            Request::WriteSingleRegister(a, w) => {
                let (i, v) = self.decode_write(a, &[w])?;
                write(i, v).map(|()| Response::WriteSingleRegister(a, w))
            }
            Request::WriteMultipleRegisters(a, ws) => {
                let (i, v) = self.decode_write(a, &ws)?;
                write(i, v).map(|()| Response::WriteMultipleRegisters(a, ws.len() as u16))
            }
            Request::WriteSingleCoil(a, on) => {
                let i = self.coil(a)?;
                write(i, if on { 1.0 } else { 0.0 }).map(|()| Response::WriteSingleCoil(a, on))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Points of `kind` overlapping `[start, end)`.
    fn overlapping(
        &self,
        kind: RegisterKind,
        start: u32,
        end: u32,
    ) -> impl Iterator<Item = &(u32, u32, usize)> {
        let spans = self.spans.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        // Points are at most 125 registers long: start the scan a little before `start`.
        let from = spans.partition_point(|s| s.0 + 125 < start);
        spans[from..]
            .iter()
            .take_while(move |s| s.0 < end)
            .filter(move |s| s.1 >= start)
    }

    /// Registers `[addr, addr+qty)`. Gaps inside the mapped area read as 0 (as
    /// on most real meters); a range touching no point is an illegal address.
    fn read_registers(
        &self,
        kind: RegisterKind,
        addr: u16,
        qty: u16,
        value: &mut dyn FnMut(usize) -> f64,
    ) -> Result<Vec<u16>, ExceptionCode> {
        if qty == 0 || qty > 125 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(addr);
        let end = start + u32::from(qty);
        let mut out = vec![0u16; usize::from(qty)];
        let mut touched = false;
        for &(ps, _, i) in self.overlapping(kind, start, end) {
            touched = true;
            let p = &self.profile.points[i];
            let d = &self.defaults;
            let regs = match p.data_type {
                Some(DataType::String) => {
                    encode_text(&p.sim.text, p.length.unwrap_or(1), p.byte_order(d))
                }
                Some(DataType::Bit) => {
                    let on = value(i) != 0.0;
                    vec![if on { 1u16 << p.bit.unwrap_or(0) } else { 0 }]
                }
                Some(t) => {
                    let scale = p.scale * self.sf_scale.get(&i).copied().unwrap_or(1.0);
                    encode(
                        value(i),
                        t,
                        p.byte_order(d),
                        p.word_order(d),
                        scale,
                        p.offset,
                    )
                }
                None => continue,
            };
            for (k, r) in regs.iter().enumerate() {
                let a = ps + k as u32;
                if a >= start && a < end {
                    // OR, so several bit points of one register combine.
                    out[(a - start) as usize] |= *r;
                }
            }
        }
        if touched {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    fn read_bits(
        &self,
        kind: RegisterKind,
        addr: u16,
        qty: u16,
        value: &mut dyn FnMut(usize) -> f64,
    ) -> Result<Vec<bool>, ExceptionCode> {
        if qty == 0 || qty > 2000 {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let start = u32::from(addr);
        let end = start + u32::from(qty);
        let mut out = vec![false; usize::from(qty)];
        let mut touched = false;
        for &(ps, _, i) in self.overlapping(kind, start, end) {
            touched = true;
            out[(ps - start) as usize] = value(i) != 0.0;
        }
        if touched {
            Ok(out)
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    /// A write must hit exactly one writable point, whole.
    fn decode_write(&self, addr: u16, words: &[u16]) -> Result<(usize, f64), ExceptionCode> {
        let start = u32::from(addr);
        let Some(&(_, _, i)) = self
            .overlapping(RegisterKind::Holding, start, start + words.len() as u32)
            .find(|s| s.0 == start && (s.1 - s.0 + 1) as usize == words.len())
        else {
            return Err(ExceptionCode::IllegalDataAddress);
        };
        let p = &self.profile.points[i];
        if !p.writable {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        match device_profile::decode_point(p, &self.defaults, words, None) {
            Ok(Decoded::Number(v)) if v.is_finite() => Ok((i, v)),
            _ => Err(ExceptionCode::IllegalDataValue),
        }
    }

    fn coil(&self, addr: u16) -> Result<usize, ExceptionCode> {
        let start = u32::from(addr);
        match self
            .overlapping(RegisterKind::Coil, start, start + 1)
            .next()
        {
            Some(&(_, _, i)) if self.profile.points[i].writable => Ok(i),
            _ => Err(ExceptionCode::IllegalDataAddress),
        }
    }
}
