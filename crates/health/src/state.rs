/// A backend's health from consecutive check results: `rise` passes in a
/// row bring a down backend up, `fall` failures in a row take an up one
/// down (the HAProxy / IPVS keepalived model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    up: bool,
    run: u32,
    rise: u32,
    fall: u32,
}

/// What one result did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change of state.
    Stay,
    /// The backend just came up.
    WentUp,
    /// The backend just went down.
    WentDown,
}

impl Health {
    /// A backend starting up (checks have not run yet) with these counts
    /// (each at least 1).
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            up: true,
            run: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check's result. `run` counts the results in a row that
    /// argue for the other state.
    pub fn record(&mut self, passed: bool) -> Transition {
        if passed == self.up {
            self.run = 0;
            return Transition::Stay;
        }
        self.run += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.run < needed {
            return Transition::Stay;
        }
        self.run = 0;
        self.up = passed;
        if passed {
            Transition::WentUp
        } else {
            Transition::WentDown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut h = Health::new(2, 3);
        assert!(h.is_up());
        assert_eq!(h.record(false), Transition::Stay);
        assert_eq!(h.record(false), Transition::Stay);
        // A pass in between restarts the count.
        assert_eq!(h.record(true), Transition::Stay);
        assert_eq!(h.record(false), Transition::Stay);
        assert_eq!(h.record(false), Transition::Stay);
        assert_eq!(h.record(false), Transition::WentDown);
        assert!(!h.is_up());
        assert_eq!(h.record(true), Transition::Stay);
        assert_eq!(h.record(false), Transition::Stay);
        assert_eq!(h.record(true), Transition::Stay);
        assert_eq!(h.record(true), Transition::WentUp);
        assert!(h.is_up());
    }
}
