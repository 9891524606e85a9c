//! The replayed engine's budget episodes, followed from its published view as the recorder
//! follows the real agent's: each from when it started until the first sample that found it
//! over.

use std::collections::BTreeMap;

use crate::budget::BudgetView;
use crate::recorder::Episode;

/// Episodes seen so far, and the one each budget is in.
#[derive(Debug, Default)]
pub(super) struct Episodes {
    seen: Vec<Episode>,
    /// Per budget, the index in `seen` of the episode it is in.
    open: BTreeMap<String, usize>,
}

impl Episodes {
    /// Follows `budgets` as published after the sample at `now` (ms since the Unix epoch).
    pub(super) fn follow(&mut self, budgets: &[BudgetView], now: i64) {
        for budget in budgets {
            self.follow_one(&budget.name, budget.episode, budget.episode_start, now);
        }
    }

    /// Follows one budget: in episode `episode` (started at `start`, ms) or in none.
    fn follow_one(&mut self, budget: &str, episode: Option<u64>, start: Option<u64>, now: i64) {
        let now = now.max(0) as u64;
        if let Some(k) = self.open.get(budget).copied() {
            if episode == Some(self.seen[k].episode) {
                return;
            }
            self.seen[k].end = Some(now);
            self.open.remove(budget);
        }
        if let Some(number) = episode {
            self.open.insert(budget.to_owned(), self.seen.len());
            self.seen.push(Episode {
                budget: budget.to_owned(),
                episode: number,
                start: start.unwrap_or(now),
                end: None,
            });
        }
    }

    /// Every episode, by start; one still going on has no end.
    pub(super) fn into_vec(self) -> Vec<Episode> {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_runs_from_its_start_to_the_first_sample_that_finds_it_over() {
        let mut episodes = Episodes::default();
        episodes.follow_one("memory", None, None, 1_000);
        episodes.follow_one("memory", Some(1), Some(1_500), 2_000);
        episodes.follow_one("memory", Some(1), Some(1_500), 3_000);
        episodes.follow_one("cpu", Some(4), None, 3_000);
        episodes.follow_one("memory", None, None, 4_000);
        // The next one begins before a sample found the budget out of the last.
        episodes.follow_one("cpu", Some(5), Some(4_500), 5_000);
        let spans: Vec<(String, u64, u64, Option<u64>)> = episodes
            .into_vec()
            .into_iter()
            .map(|e| (e.budget, e.episode, e.start, e.end))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("memory".to_owned(), 1, 1_500, Some(4_000)),
                ("cpu".to_owned(), 4, 3_000, Some(5_000)),
                ("cpu".to_owned(), 5, 4_500, None),
            ]
        );
    }
}
