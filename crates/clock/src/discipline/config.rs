//! The discipline's parameters, [`DisciplineConfig`], with the RFC 5905
//! defaults.

/// Discipline parameters. `Default` gives the RFC 5905 values.
#[derive(Clone, Debug)]
pub struct DisciplineConfig {
    /// STEPT: offsets above this are stepped, not slewed (s; RFC 0.128).
    pub step_threshold: f64,
    /// WATCH: how long offsets must stay above `step_threshold` before a
    /// step (s; RFC 900). Scenarios with short polls use e.g. 2 s.
    pub stepout: f64,
    /// PANICT: offsets above this are refused (s; RFC 1000). `None` =
    /// never panic.
    pub panic_threshold: Option<f64>,
    /// Smallest poll exponent (log2 s; RFC MINPOLL 4; down to -4 allowed).
    pub min_poll: i8,
    /// Largest poll exponent (log2 s; RFC MAXPOLL 17).
    pub max_poll: i8,
    /// Phase slew time constant, in poll intervals: an offset is slewed out
    /// with time constant `phase_time_constant × 2^poll` s (default 16,
    /// like ntpd's `CLOCK_PLL`).
    pub phase_time_constant: f64,
    /// Longest spacing of phase adjustments by
    /// [`Discipline::tick`](super::Discipline::tick) (s; default 1, like
    /// ntpd's `clock_adjust`).
    pub adjust_interval: f64,
    /// Estimator process noise of the phase (white FM, s²/s; default
    /// 1e-14).
    pub phase_noise: f64,
    /// Estimator process noise of the frequency (random-walk FM, (s/s)²/s;
    /// default 1e-16: about 0.6 ppm per hour).
    pub frequency_wander: f64,
    /// Floor of the measurement noise (s; default 1 µs).
    pub min_jitter: f64,
    /// Prior guess of the measurement noise (s; default 1 ms), blended out
    /// as offsets arrive. Erring high only slows the first minute down;
    /// erring low would make the estimator overconfident.
    pub initial_noise: f64,
    /// Uncertainty of a drift-file frequency (ppm; default 2).
    pub initial_frequency_uncertainty_ppm: f64,
    /// Innovations beyond this many standard deviations count as phase
    /// jumps (default 5).
    pub jump_gate: f64,
    /// The poll rises when the regression keeps at least this many
    /// samples (default 24).
    pub poll_up_window: usize,
    /// The poll falls when the regression keeps fewer than this many
    /// samples (default 8).
    pub poll_down_window: usize,
    /// Samples at a poll before it may rise (default 30; a quarter of
    /// it before it may fall).
    pub poll_limit: i32,
    /// Shortest phase slew time constant (s; default 16): an offset much
    /// larger than its own uncertainty (the one left after the first step
    /// while the frequency is measured) is slewed out this fast, not at
    /// the noise-filtering time constant.
    pub min_time_constant: f64,
    /// Whether the clock is steered by the commands (default true). An
    /// observe-only clock is never adjusted: the estimator then models no
    /// corrections and no steps, so its offset and frequency describe the
    /// free-running clock and cannot run off.
    pub steered: bool,
}

impl Default for DisciplineConfig {
    fn default() -> Self {
        Self {
            step_threshold: 0.128,
            stepout: 900.0,
            panic_threshold: Some(1000.0),
            min_poll: 4,
            max_poll: 17,
            phase_time_constant: 1.0,
            adjust_interval: 1.0,
            phase_noise: 1e-17,
            frequency_wander: 1e-16,
            min_jitter: 1e-6,
            initial_noise: 1e-3,
            initial_frequency_uncertainty_ppm: 2.0,
            jump_gate: 5.0,
            poll_up_window: 24,
            poll_down_window: 8,
            poll_limit: 30,
            min_time_constant: 16.0,
            steered: true,
        }
    }
}
