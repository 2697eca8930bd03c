//! A breaker's state as stored in the key-value store: a few numbers as text.

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Phase {
    Closed,
    /// No calls to the backend before `until` (ms).
    Open {
        until: u64,
    },
    /// One probe call has been out since `since` (ms).
    HalfOpen {
        since: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub struct State {
    pub phase: Phase,
    /// Counting (while closed) started here; a call after the window starts a new one.
    pub window_start: u64,
    pub calls: u32,
    pub failures: u32,
}

impl State {
    pub fn closed(now: u64) -> State {
        State { phase: Phase::Closed, window_start: now, calls: 0, failures: 0 }
    }

    pub fn open(until: u64) -> State {
        State { phase: Phase::Open { until }, window_start: 0, calls: 0, failures: 0 }
    }

    /// Absent (never used) or unreadable: closed, with a window long over.
    pub fn decode(bytes: Option<&[u8]>) -> State {
        let parsed = || -> Option<State> {
            let text = std::str::from_utf8(bytes?).ok()?;
            let mut parts = text.split(',');
            let kind = parts.next()?;
            let mut num = || parts.next()?.parse::<u64>().ok();
            Some(match kind {
                "c" => State {
                    phase: Phase::Closed,
                    window_start: num()?,
                    calls: num()? as u32,
                    failures: num()? as u32,
                },
                "o" => State::open(num()?),
                "h" => State { phase: Phase::HalfOpen { since: num()? }, ..State::closed(0) },
                _ => return None,
            })
        };
        parsed().unwrap_or(State::closed(0))
    }

    pub fn encode(&self) -> Vec<u8> {
        match self.phase {
            Phase::Closed => format!("c,{},{},{}", self.window_start, self.calls, self.failures),
            Phase::Open { until } => format!("o,{until}"),
            Phase::HalfOpen { since } => format!("h,{since}"),
        }
        .into_bytes()
    }
}
