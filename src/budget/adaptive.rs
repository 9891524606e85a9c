//! A budget's adaptive reaction state (`[tuning] reaction = "adaptive"`): the short-horizon
//! rise of its signal, whether its limit is a kill line, the learned guard band and the
//! urgency of the latest reading. The budget ([`crate::budget::Budget`]) asks it at three
//! points: whether a reading is urgent (an episode starts, no calm sample), whether a running
//! rung is judged without waiting out its settle, and which rung a step skips to.

use std::time::{Duration, Instant};

use super::guard::GuardBand;
use super::noise::NoiseBand;
use super::urgency::{assess, overshoot, Line, Reaction, Rise, Urgency};
use super::verdict::Verdict;
use super::{BudgetConfig, ReactionTuning};

/// The latency assumed for a rung that has not run yet: 100 ms.
pub const FIRST_RUN_LATENCY: Duration = Duration::from_millis(100);

/// Without any rise seen, an OOM kill lowers the goal by this share of the configured goal
/// (twice [`GuardBand::CREEP_SHARE`]).
pub const BLIND_OOM_SHARE: f64 = 2.0 * GuardBand::CREEP_SHARE;

/// What a rung has shown: its latency and its mean relief, for the urgency and skip rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Track {
    /// Its last measured latency.
    pub latency: Option<Duration>,
    /// Its mean relief (counterfactual), when judged at least once.
    pub mean_relief: Option<f64>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Adaptive {
    pub tuning: ReactionTuning,
    pub rise: Rise,
    pub line: Line,
    pub guard: GuardBand,
    /// The steepest slope seen (per second), for the guard band after an OOM kill.
    pub worst_slope: f64,
    /// The urgency of the latest reading.
    pub urgency: Option<Urgency>,
    /// The time between the last two regular samples.
    pub period: Option<Duration>,
    /// The slope the fast watch saw from its own reads toward the limit just before this
    /// reading, if any ([`super::urgency::Rise::slope_toward`]).
    pub watch_slope: Option<f64>,
    /// The range the signal swung through lately.
    pub noise: NoiseBand,
    /// The latest reading was inside the noise band: its urgency and forecast do not count.
    pub inside_noise: bool,
}

impl Adaptive {
    pub fn new(config: &BudgetConfig, tuning: ReactionTuning) -> Self {
        Adaptive {
            tuning,
            rise: Rise::default(),
            line: Line::Limit,
            guard: GuardBand::new(
                config.goal,
                config
                    .min_goal
                    .unwrap_or_else(|| GuardBand::default_floor(config.goal)),
            ),
            worst_slope: 0.0,
            urgency: None,
            period: None,
            watch_slope: None,
            noise: NoiseBand::default(),
            inside_noise: false,
        }
    }

    /// The reaction time of a rung with `track`, under `config`: its latency, its settle,
    /// one watch period (the fast watch's, else the sampling interval) and the margin.
    pub fn reaction(&self, config: &BudgetConfig, track: Option<Track>) -> Reaction {
        let latency = track.and_then(|t| t.latency).unwrap_or(FIRST_RUN_LATENCY);
        let period = config
            .watch_interval
            .or(self.period)
            .unwrap_or(Duration::ZERO);
        Reaction::new(latency, config.settle).watch_period(period)
    }

    /// Adds a reading and works out its urgency against the limit for the next rung
    /// (`next`). Returns whether it is urgent: never inside the noise band (a swing back up
    /// to where the signal has been, under the goal held; see [`NoiseBand`]).
    pub fn sense(
        &mut self,
        value: f64,
        now: Instant,
        config: &BudgetConfig,
        next: Option<Track>,
    ) -> bool {
        self.rise.push(now, value);
        // The watch's reads, every few ms, see a fill the full samples see as one jump. Either
        // is extrapolated only as far as the rise behind it has lasted (`Rise::slope_toward`).
        let slope = self
            .watch_slope
            .take()
            .or_else(|| self.rise.slope_toward(config.limit));
        if let Some(slope) = slope {
            self.worst_slope = self.worst_slope.max(slope);
        }
        let reaction = self.reaction(config, next);
        let mut urgency = assess(value, config.limit, slope, &reaction, self.line);
        self.inside_noise = self.noise.holds(now, value, self.guard.effective());
        self.noise.push(now, value);
        if self.inside_noise {
            urgency.urgent = false;
        }
        self.urgency = Some(urgency);
        urgency.urgent
    }

    /// Whether a rung that finished is judged at this reading without waiting out `settle`:
    /// the limit is nearer than the settle at the slope of this reading (so the signal is
    /// still rising) and the reading is above the one before the rung ran. A rung that only
    /// slowed the rise does not earn the settle's wait while the rise still reaches the limit
    /// within it.
    pub fn hurry(&self, settle: Duration, before: f64, value: f64) -> bool {
        let near = self
            .urgency
            .and_then(|u| u.time_to_limit)
            .is_some_and(|time| time < settle);
        near && value > before
    }

    /// The rung to skip to from `next` when the forecast overshoot (how far past the limit the
    /// rise carries the signal before the rung acts) is larger than what `next`
    /// has been seen to relieve: the lowest rung whose learned relief covers it (a rung never
    /// judged might: the walk stops there; against a kill line, not at `next` itself), at most
    /// `max_rungs_skipped` rungs up, never past
    /// `top` or a rung `blocked` (already run or skipped in this episode). Returns the rung
    /// and the record's sentence.
    pub fn skip_to(
        &self,
        config: &BudgetConfig,
        value: f64,
        next: usize,
        top: usize,
        tracks: &[(String, Track)],
        blocked: impl Fn(usize) -> bool,
    ) -> Option<(usize, String)> {
        let urgency = self.urgency?;
        let slope = urgency.slope.filter(|s| *s > 0.0)?;
        let limit = config.limit;
        // Until the rung acts: its latency, one watch period and the margin (no settle: near
        // the limit its effect is read at the next reading, see `hurry`).
        let covers = |rung: usize| {
            let reaction = self.reaction(config, Some(tracks[rung].1));
            let acting = reaction.latency + reaction.watch_period + reaction.margin;
            let need = overshoot(value, limit, slope, acting);
            // A rung never judged might cover it. Against a kill line the next rung, never
            // judged, is not trusted with the forecast (a wrong guess kills the target): the
            // step goes one rung past it, to the first rung above that might cover it.
            let unknown = self.line == Line::Limit || rung != next;
            let covered = tracks[rung]
                .1
                .mean_relief
                .map_or(unknown, |relief| relief >= need);
            (need, covered)
        };
        let (need, covered) = covers(next);
        if need <= 0.0 || covered {
            return None;
        }
        let mut to = next;
        let mut skipped = 0;
        while to < top && skipped < self.tuning.max_rungs_skipped {
            let candidate = to + 1;
            if blocked(candidate) {
                break;
            }
            to = candidate;
            skipped += 1;
            if covers(to).1 {
                break;
            }
        }
        if to == next {
            return None;
        }
        let reliefs = (next..=to)
            .map(|rung| {
                let (name, track) = &tracks[rung];
                match track.mean_relief {
                    Some(relief) => format!(
                        "{name} relieves {:.0} %",
                        100.0 * Verdict::relief_share(relief.max(0.0), limit)
                    ),
                    None => format!("{name} not judged yet"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Some((
            to,
            format!(
                "{}; forecast {:.0} % past the {}; {reliefs}: skipped to {}",
                urgency,
                100.0 * Verdict::relief_share(need, limit),
                self.line,
                tracks[to].0
            ),
        ))
    }

    /// The target was OOM-killed: the guard band moves down by the headroom the fastest rise
    /// seen would consume in the reaction time of the first rung (or, with no rise seen, by
    /// [`BLIND_OOM_SHARE`] of the goal). Returns whether it moved.
    pub fn oom_kill(&mut self, config: &BudgetConfig, first: Option<Track>, how: &str) -> bool {
        let reaction = self.reaction(config, first).reaction().as_secs_f64();
        let overshoot = if self.worst_slope > 0.0 {
            self.worst_slope * reaction
        } else {
            config.goal * BLIND_OOM_SHARE
        };
        let how = if self.worst_slope > 0.0 {
            format!(
                "{how}; the fastest rise seen, {:.3}/s, takes {:.3} in {:.0} ms of reaction",
                self.worst_slope,
                overshoot,
                reaction * 1000.0
            )
        } else {
            format!(
                "{how}; no rise seen, a step of {:.0} %",
                BLIND_OOM_SHARE * 100.0
            )
        };
        self.guard.oom_kill(overshoot, &how)
    }

    /// Forgets what was learned (the guard band, the rise).
    pub fn reset(&mut self) {
        self.guard.reset();
        self.rise.clear();
        self.noise.clear();
        self.inside_noise = false;
        self.worst_slope = 0.0;
        self.urgency = None;
        self.watch_slope = None;
    }
}
