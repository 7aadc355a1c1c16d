//! Where a run is in its template: a stack of frames, one per nesting
//! level, each a step index and (for a repeat being run) its pass from 1.
//! Moving through the steps yields the STEP_STARTED / STEP_FINISHED events
//! of repeats and leaves in order, with paths in the contract's format
//! (`"3:17/1"`: the second nested step of the 17th pass of step 3).

use qi_protocol::{OfflinePolicy, Protocol, RestartPolicy, Step};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub idx: usize,
    /// The pass of the repeat at `idx` when the cursor is inside it (from 1).
    pub pass: u32,
}

/// A step boundary, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    Started(String),
    Finished(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub frames: Vec<Frame>,
}

impl Cursor {
    /// The path of the step at depth `d` (itself, not inside it).
    fn path_to(&self, d: usize) -> String {
        let mut s = String::new();
        for f in &self.frames[..d] {
            s.push_str(&format!("{}:{}/", f.idx, f.pass));
        }
        s.push_str(&self.frames[d].idx.to_string());
        s
    }

    /// The current (leaf) step's path.
    pub fn path(&self) -> String {
        if self.frames.is_empty() {
            return String::new();
        }
        self.path_to(self.frames.len() - 1)
    }

    fn list<'a>(&self, p: &'a Protocol, depth: usize) -> &'a [Step] {
        let mut steps: &[Step] = &p.steps;
        for f in &self.frames[..depth] {
            match &steps[f.idx] {
                Step::Repeat { steps: inner, .. } => steps = inner,
                _ => return &[],
            }
        }
        steps
    }

    /// The current step (a leaf once [`Cursor::start`] or [`Cursor::advance`] returned).
    pub fn step<'a>(&self, p: &'a Protocol) -> Option<&'a Step> {
        let d = self.frames.len().checked_sub(1)?;
        self.list(p, d).get(self.frames[d].idx)
    }

    /// Enters repeats at the cursor until it is on a leaf.
    fn descend(&mut self, p: &Protocol, out: &mut Vec<Boundary>) {
        loop {
            let d = self.frames.len() - 1;
            out.push(Boundary::Started(self.path_to(d)));
            match self.step(p) {
                Some(Step::Repeat { .. }) => {
                    self.frames[d].pass = 1;
                    self.frames.push(Frame { idx: 0, pass: 0 });
                }
                _ => return,
            }
        }
    }

    /// The cursor on the first leaf, and the steps entered.
    pub fn start(p: &Protocol) -> (Cursor, Vec<Boundary>) {
        let mut c = Cursor {
            frames: vec![Frame { idx: 0, pass: 0 }],
        };
        let mut out = Vec::new();
        c.descend(p, &mut out);
        (c, out)
    }

    /// Finishes the current leaf and moves to the next; false when the
    /// template is done. `out` gets the boundaries crossed.
    pub fn advance(&mut self, p: &Protocol, out: &mut Vec<Boundary>) -> bool {
        out.push(Boundary::Finished(self.path()));
        loop {
            let d = self.frames.len() - 1;
            self.frames[d].idx += 1;
            self.frames[d].pass = 0;
            if self.frames[d].idx < self.list(p, d).len() {
                self.descend(p, out);
                return true;
            }
            self.frames.pop();
            let Some(d) = self.frames.len().checked_sub(1) else {
                return false;
            };
            let count = match self.step(p) {
                Some(Step::Repeat { count, .. }) => *count,
                _ => 0,
            };
            if self.frames[d].pass < count {
                self.frames[d].pass += 1;
                self.frames.push(Frame { idx: 0, pass: 0 });
                self.descend(p, out);
                return true;
            }
            out.push(Boundary::Finished(self.path_to(d)));
        }
    }

    /// The policies in force at the cursor: the leaf's own, else the
    /// innermost enclosing repeat's, else the protocol's.
    pub fn policies(&self, p: &Protocol) -> (OfflinePolicy, RestartPolicy) {
        let mut offline = None;
        let mut restart = None;
        for d in (0..self.frames.len()).rev() {
            if let Some(s) = self.list(p, d).get(self.frames[d].idx) {
                let (o, r) = s.policies();
                offline = offline.or(o);
                restart = restart.or(r);
            }
        }
        (
            offline.unwrap_or(p.protocol.on_device_offline),
            restart.unwrap_or(p.protocol.on_restart),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"format_version = 1
[protocol]
id = "t"
name = "t"
version = "1"
standard = "s"
on_device_offline = "pause"
on_restart = "resume"
[[steps]]
kind = "dwell"
duration = "1 s"
[[steps]]
kind = "repeat"
count = 2
on_restart = "abort"
  [[steps.steps]]
  kind = "dwell"
  duration = "1 s"
  [[steps.steps]]
  kind = "dwell"
  duration = "1 s"
  on_device_offline = "abort"
[[steps]]
kind = "dwell"
duration = "1 s"
[[criteria]]
id = "c"
description = "c"
expression = "1 == 1"
unit = "1"
"#;

    fn protocol() -> Protocol {
        Protocol::parse(T, std::path::Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_walk_gives_every_boundary_in_order_with_contract_paths() {
        let p = protocol();
        let (mut c, mut out) = Cursor::start(&p);
        let mut leaves = vec![c.path()];
        while c.advance(&p, &mut out) {
            leaves.push(c.path());
        }
        assert_eq!(leaves, ["0", "1:1/0", "1:1/1", "1:2/0", "1:2/1", "2"]);
        let s = |x: &str| Boundary::Started(x.into());
        let f = |x: &str| Boundary::Finished(x.into());
        assert_eq!(
            out,
            [
                s("0"),
                f("0"),
                s("1"),
                s("1:1/0"),
                f("1:1/0"),
                s("1:1/1"),
                f("1:1/1"),
                s("1:2/0"),
                f("1:2/0"),
                s("1:2/1"),
                f("1:2/1"),
                f("1"),
                s("2"),
                f("2"),
            ]
        );
        // Finished events count the executed steps as the template does.
        let finished = out
            .iter()
            .filter(|b| matches!(b, Boundary::Finished(_)))
            .count();
        assert_eq!(finished as u64, p.executed_steps());
    }

    #[test]
    fn restart_and_offline_policies_come_from_the_step_then_its_repeat_then_the_protocol() {
        let p = protocol();
        let (mut c, mut out) = Cursor::start(&p);
        assert_eq!(
            c.policies(&p),
            (OfflinePolicy::Pause, RestartPolicy::Resume)
        );
        c.advance(&p, &mut out);
        assert_eq!(c.policies(&p), (OfflinePolicy::Pause, RestartPolicy::Abort));
        c.advance(&p, &mut out);
        assert_eq!(c.policies(&p), (OfflinePolicy::Abort, RestartPolicy::Abort));
        // A checkpointed cursor is a plain value.
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<Cursor>(&json).expect("back"), c);
        assert_eq!(c.path(), "1:1/1");
    }
}
