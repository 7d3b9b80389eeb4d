//! Source selection, clustering and combining (RFC 5905 §11.2).
//!
//! [`select`] runs the three system-process algorithms over the current
//! candidates (one per usable association):
//!
//! 1. **Eligibility.** The root distance of a candidate is
//!    `lambda = max(MINDISP, delay) / 2 + dispersion + jitter`, with `delay`
//!    and `dispersion` the root delay and root dispersion up to and including
//!    this hop (RFC 5905 `root_dist()`; the caller ages the dispersion).
//!    Candidates with a non-finite value or with `lambda >
//!    SelectConfig::max_distance` take no part; they are neither
//!    truechimers nor falsetickers. [`root_distance`] exposes the formula.
//! 2. **Intersection** (Marzullo's algorithm as in RFC 5905
//!    `clock_select()`): each candidate stands for the correctness interval
//!    `[offset - lambda, offset + lambda]`. Allowing `f = 0, 1, …` falsetickers
//!    while `2f < n`, find the smallest interval contained in at least
//!    `n - f` correctness intervals, with no more than `f` midpoints outside
//!    it. No such interval means no majority clique: `None`. Candidates whose
//!    correctness interval overlaps the intersection are truechimers (the
//!    ntpd rule; RFC 5905 tests the midpoint), the others falsetickers.
//!    Fewer than `min_sane` truechimers also gives `None`.
//! 3. **Clustering**: survivors are ranked by the metric `max_distance ×
//!    stratum + lambda` (lower is better). While more than `min_survivors`
//!    remain, the survivor with the largest selection jitter (RMS offset
//!    difference to the other survivors) is dropped, unless that jitter is
//!    already below the smallest peer jitter.
//! 4. **Combining**: the system offset is the survivors' offsets weighted by
//!    `1 / lambda`. The system peer is the first (best-metric) survivor. The
//!    system jitter is `sqrt(psi_p² + psi_s²)`, where `psi_p` is the system
//!    peer's jitter and `psi_s` the `1 / lambda`-weighted RMS of the
//!    survivors' offsets around the system peer's (RFC 5905
//!    `clock_combine()`).

/// Minimum dispersion increment MINDISP (RFC 5905), 10 ms: the floor for
/// a candidate's delay in the root distance.
pub const MINDISP: f64 = 0.01;

/// One candidate source for selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The caller's identifier for this source (echoed in [`Selection`]).
    pub id: usize,
    /// Clock offset (s), reference − local.
    pub offset: f64,
    /// Root delay to the reference (s), including this hop.
    pub delay: f64,
    /// Root dispersion (s), including this hop.
    pub dispersion: f64,
    /// Peer jitter (s).
    pub jitter: f64,
    /// The source's stratum.
    pub stratum: u8,
}

/// Selection parameters.
#[derive(Clone, Debug)]
pub struct SelectConfig {
    /// NMIN: clustering stops at this many survivors (RFC 5905: 3).
    pub min_survivors: usize,
    /// Fewest truechimers to accept a selection at all (RFC 5905 CMIN-style
    /// sanity floor: 1).
    pub min_sane: usize,
    /// MAXDIST: candidates with a larger root distance are not eligible (s,
    /// RFC 5905: 1.5).
    pub max_distance: f64,
}

impl Default for SelectConfig {
    fn default() -> Self {
        Self {
            min_survivors: 3,
            min_sane: 1,
            max_distance: 1.5,
        }
    }
}

/// The result of [`select`].
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Ids of the candidates inside the majority intersection.
    pub truechimers: Vec<usize>,
    /// Ids of eligible candidates outside it.
    pub falsetickers: Vec<usize>,
    /// Ids of the survivors after clustering, best metric first.
    pub survivors: Vec<usize>,
    /// Id of the system peer (the first survivor).
    pub system_peer: usize,
    /// The combined system offset (s).
    pub offset: f64,
    /// The system jitter (s).
    pub jitter: f64,
}

/// The root distance lambda of a candidate (s): `max(MINDISP, delay) / 2 +
/// dispersion + jitter`. Not finite when any input is not.
#[must_use]
pub fn root_distance(c: &Candidate) -> f64 {
    c.delay.max(MINDISP) / 2.0 + c.dispersion + c.jitter
}

/// Whether a candidate may take part in selection: finite values,
/// non-negative delay/dispersion/jitter and a root distance within
/// `config.max_distance`.
#[must_use]
pub fn is_eligible(c: &Candidate, config: &SelectConfig) -> bool {
    let finite = c.offset.is_finite()
        && c.delay.is_finite()
        && c.dispersion.is_finite()
        && c.jitter.is_finite();
    finite
        && c.delay >= 0.0
        && c.dispersion >= 0.0
        && c.jitter >= 0.0
        && root_distance(c) <= config.max_distance
}

/// Intersection (Marzullo/RFC 5905 selection), clustering, combining
/// (weighted by 1/lambda). `None` when no majority clique exists or no
/// candidate is eligible. See the module doc for the exact rules.
#[must_use]
pub fn select(candidates: &[Candidate], config: &SelectConfig) -> Option<Selection> {
    let eligible: Vec<(Candidate, f64)> = candidates
        .iter()
        .filter(|c| is_eligible(c, config))
        .map(|c| (*c, root_distance(c)))
        .collect();
    let n = eligible.len();
    if n == 0 {
        return None;
    }

    // Intersection.
    let mut edges: Vec<(f64, i8)> = Vec::with_capacity(3 * n);
    for (c, lambda) in &eligible {
        edges.push((c.offset - lambda, -1));
        edges.push((c.offset, 0));
        edges.push((c.offset + lambda, 1));
    }
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut interval = None;
    let mut allow = 0;
    while 2 * allow < n {
        let need = n - allow;
        let mut found = 0;
        let mut chime = 0usize;
        let mut low = None;
        for &(edge, kind) in &edges {
            match kind {
                -1 => chime += 1,
                1 => chime = chime.saturating_sub(1),
                _ => {}
            }
            if chime >= need {
                low = Some(edge);
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        chime = 0;
        let mut high = None;
        for &(edge, kind) in edges.iter().rev() {
            match kind {
                1 => chime += 1,
                -1 => chime = chime.saturating_sub(1),
                _ => {}
            }
            if chime >= need {
                high = Some(edge);
                break;
            }
            if kind == 0 {
                found += 1;
            }
        }
        if let (Some(l), Some(h)) = (low, high) {
            if found <= allow && l <= h {
                interval = Some((l, h));
                break;
            }
        }
        allow += 1;
    }
    let (low, high) = interval?;

    let mut truechimers = Vec::new();
    let mut falsetickers = Vec::new();
    let mut survivors: Vec<(Candidate, f64)> = Vec::new();
    for &(c, lambda) in &eligible {
        if c.offset + lambda < low || c.offset - lambda > high {
            falsetickers.push(c.id);
        } else {
            truechimers.push(c.id);
            survivors.push((c, lambda));
        }
    }
    if truechimers.len() < config.min_sane.max(1) {
        return None;
    }

    // Clustering.
    let metric = |c: &Candidate, lambda: f64| config.max_distance * f64::from(c.stratum) + lambda;
    survivors.sort_by(|a, b| metric(&a.0, a.1).total_cmp(&metric(&b.0, b.1)));
    while survivors.len() > config.min_survivors.max(1) {
        let m = survivors.len();
        let mut worst = 0;
        let mut worst_jitter = f64::NEG_INFINITY;
        for (i, (ci, _)) in survivors.iter().enumerate() {
            let sum: f64 = survivors
                .iter()
                .map(|(cj, _)| (cj.offset - ci.offset).powi(2))
                .sum();
            #[allow(clippy::cast_precision_loss)] // a handful of survivors
            let phi = (sum / (m - 1) as f64).sqrt();
            // Ties drop the worse-ranked (later) survivor.
            if phi >= worst_jitter {
                worst_jitter = phi;
                worst = i;
            }
        }
        let min_peer_jitter = survivors
            .iter()
            .map(|(c, _)| c.jitter)
            .fold(f64::INFINITY, f64::min);
        if worst_jitter < min_peer_jitter {
            break;
        }
        survivors.remove(worst);
    }

    // Combining.
    let (peer, _) = survivors[0];
    let (mut y, mut z, mut w) = (0.0, 0.0, 0.0);
    for (c, lambda) in &survivors {
        let lambda = lambda.max(f64::MIN_POSITIVE);
        y += 1.0 / lambda;
        z += c.offset / lambda;
        w += (c.offset - peer.offset).powi(2) / lambda;
    }
    let selection_jitter = (w / y).sqrt();
    Some(Selection {
        truechimers,
        falsetickers,
        survivors: survivors.iter().map(|(c, _)| c.id).collect(),
        system_peer: peer.id,
        offset: z / y,
        jitter: (peer.jitter.powi(2) + selection_jitter.powi(2)).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: usize, offset: f64, delay: f64, stratum: u8) -> Candidate {
        Candidate {
            id,
            offset,
            delay,
            dispersion: 0.001,
            jitter: 0.0005,
            stratum,
        }
    }

    #[test]
    fn one_falseticker_of_four_is_rejected() {
        let cands = [
            c(1, 0.001, 0.02, 2),
            c(2, -0.002, 0.02, 2),
            c(3, 0.5, 0.02, 2), // half a second off
            c(4, 0.0005, 0.02, 2),
        ];
        let s = select(&cands, &SelectConfig::default()).unwrap();
        assert_eq!(s.falsetickers, vec![3]);
        assert_eq!(s.truechimers, vec![1, 2, 4]);
        assert!(!s.survivors.contains(&3));
        assert!(s.offset.abs() < 0.002, "{}", s.offset);
    }

    #[test]
    fn no_majority_gives_none() {
        let cands = [c(1, 0.0, 0.02, 2), c(2, 1.0, 0.02, 2)];
        assert_eq!(select(&cands, &SelectConfig::default()), None);
        let cands = [
            c(1, 0.0, 0.02, 2),
            c(2, 0.4, 0.02, 2),
            c(3, 0.8, 0.02, 2),
            c(4, 1.2, 0.02, 2),
        ];
        assert_eq!(select(&cands, &SelectConfig::default()), None);
    }

    #[test]
    fn nothing_eligible_gives_none() {
        assert_eq!(select(&[], &SelectConfig::default()), None);
        let mut far = c(1, 0.0, 0.02, 2);
        far.dispersion = 2.0;
        assert!(!is_eligible(&far, &SelectConfig::default()));
        assert_eq!(select(&[far], &SelectConfig::default()), None);
        let mut nan = c(2, f64::NAN, 0.02, 2);
        assert_eq!(select(&[nan], &SelectConfig::default()), None);
        nan.offset = 0.0;
        nan.jitter = f64::INFINITY;
        assert_eq!(select(&[nan], &SelectConfig::default()), None);
    }

    #[test]
    fn a_single_source_is_selected() {
        let s = select(&[c(7, 0.25, 0.02, 1)], &SelectConfig::default()).unwrap();
        assert_eq!(s.system_peer, 7);
        assert_eq!(s.survivors, vec![7]);
        assert!((s.offset - 0.25).abs() < 1e-12);
        assert!((s.jitter - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn clustering_keeps_the_best() {
        // Five truechimers; the one at +20 ms is the outlier of the cluster
        // and the stratum-1, low-delay source ranks first.
        let cands = [
            c(1, 0.000, 0.020, 2),
            c(2, 0.001, 0.010, 1),
            c(3, 0.020, 0.020, 2),
            c(4, -0.001, 0.020, 2),
            c(5, 0.0005, 0.040, 3),
        ];
        let cfg = SelectConfig::default();
        let s = select(&cands, &cfg).unwrap();
        assert_eq!(s.truechimers.len(), 5);
        assert!(s.falsetickers.is_empty());
        assert_eq!(s.survivors.len(), 3);
        assert!(!s.survivors.contains(&3), "{:?}", s.survivors);
        assert_eq!(s.system_peer, 2);
        assert_eq!(s.survivors[0], 2);
        // Survivors are in metric order.
        let metric = |id: usize| {
            let c = cands.iter().find(|c| c.id == id).unwrap();
            cfg.max_distance * f64::from(c.stratum) + root_distance(c)
        };
        assert!(s.survivors.windows(2).all(|w| metric(w[0]) <= metric(w[1])));
        // The combined offset lies within the survivors' offsets.
        assert!(s.offset > -0.001 && s.offset < 0.001);
    }

    #[test]
    fn clustering_stops_when_jitter_dominates() {
        // Peer jitter larger than the spread: nothing is pruned.
        let mut cands = vec![];
        for i in 0..5 {
            let mut k = c(i, f64::from(u8::try_from(i).unwrap()) * 1e-4, 0.02, 2);
            k.jitter = 0.01;
            cands.push(k);
        }
        let s = select(&cands, &SelectConfig::default()).unwrap();
        assert_eq!(s.survivors.len(), 5);
    }

    #[test]
    fn combining_weights_by_inverse_distance() {
        let mut a = c(1, 0.010, 0.02, 2);
        let mut b = c(2, 0.000, 0.02, 2);
        a.dispersion = 0.100;
        b.dispersion = 0.001;
        let s = select(&[a, b], &SelectConfig::default()).unwrap();
        let (la, lb) = (root_distance(&a), root_distance(&b));
        let expect = (0.010 / la) / (1.0 / la + 1.0 / lb);
        assert!((s.offset - expect).abs() < 1e-12);
        assert_eq!(s.system_peer, 2);
    }
}
