//! Clock-quality figures computed from a host's per-second [`Record`]s.

use crate::sim::Record;

/// The bound on the true error that counts as locked (s).
pub const LOCK_THRESHOLD: f64 = 1e-3;

/// The figures of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// First true time after which |error| stays below
    /// [`LOCK_THRESHOLD`] to the end of the run (s); `None` if it never
    /// does.
    pub time_to_lock: Option<f64>,
    /// Start of the steady-state window: the later of the lock time and
    /// half the run (s).
    pub steady_from: f64,
    /// RMS of the true error over the steady-state window (s).
    pub steady_rms: f64,
    /// Largest |true error| over the steady-state window (s).
    pub steady_max: f64,
    /// Mean |frequency estimate + oscillator error| over the steady-state
    /// window (ppm): how far the discipline's frequency correction is from
    /// the one that cancels the oscillator's error.
    pub frequency_error_ppm: f64,
    /// Datagrams sent by the host over the run.
    pub packets_sent: u64,
}

impl Metrics {
    /// Computes the figures; `None` for an empty trace.
    #[must_use]
    pub fn from_trace(trace: &[Record]) -> Option<Metrics> {
        Self::from_trace_relative(trace, |_| 0.0)
    }

    /// Computes the figures of the error less `bias(t)`, the error NTP
    /// cannot see (half a path's asymmetry, [`crate::Path::half_asymmetry`]);
    /// `None` for an empty trace.
    #[must_use]
    pub fn from_trace_relative(trace: &[Record], bias: impl Fn(f64) -> f64) -> Option<Metrics> {
        let trace: Vec<Record> = trace
            .iter()
            .map(|r| Record {
                error: r.error - bias(r.t),
                ..*r
            })
            .collect();
        let last = trace.last()?;
        let lock_index = match trace.iter().rposition(|r| r.error.abs() >= LOCK_THRESHOLD) {
            None => Some(0),
            Some(i) if i + 1 < trace.len() => Some(i + 1),
            Some(_) => None,
        };
        let time_to_lock = lock_index.and_then(|i| trace.get(i)).map(|r| r.t);
        let half = last.t / 2.0;
        let steady_from = time_to_lock.map_or(half, |t| t.max(half));
        let window: Vec<&Record> = trace.iter().filter(|r| r.t >= steady_from).collect();
        let n = f64::from(u32::try_from(window.len()).unwrap_or(u32::MAX).max(1));
        let steady_rms = (window.iter().map(|r| r.error * r.error).sum::<f64>() / n).sqrt();
        let steady_max = window.iter().map(|r| r.error.abs()).fold(0.0, f64::max);
        let frequency_error_ppm = window
            .iter()
            .map(|r| (r.frequency_ppm + r.oscillator_ppm).abs())
            .sum::<f64>()
            / n;
        Some(Metrics {
            time_to_lock,
            steady_from,
            steady_rms,
            steady_max,
            frequency_error_ppm,
            packets_sent: last.sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, error: f64) -> Record {
        Record {
            t,
            error,
            correction_ppm: -50.0,
            frequency_ppm: -49.0,
            oscillator_ppm: 50.0,
            sent: 7,
        }
    }

    #[test]
    fn lock_is_when_error_stays_small() {
        let trace: Vec<Record> = (0..100)
            .map(|i| {
                let t = f64::from(i);
                rec(t, if i < 10 || i == 30 { 0.5 } else { 1e-4 })
            })
            .collect();
        let m = Metrics::from_trace(&trace).expect("metrics");
        assert_eq!(m.time_to_lock, Some(31.0));
        assert_eq!(m.steady_from, 49.5);
        assert!((m.steady_rms - 1e-4).abs() < 1e-12);
        assert!((m.steady_max - 1e-4).abs() < 1e-12);
        assert!((m.frequency_error_ppm - 1.0).abs() < 1e-9);
        assert_eq!(m.packets_sent, 7);
        assert!(Metrics::from_trace(&[]).is_none());
        let never = [rec(0.0, 0.5), rec(1.0, 0.5)];
        assert_eq!(Metrics::from_trace(&never).expect("m").time_to_lock, None);
    }
}
