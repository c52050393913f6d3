//! When scheduled runs happen: the cron expression (in local time), and which of them are
//! `--full`. No clock here: times are parameters.

use chrono::{DateTime, TimeZone};

/// A parsed `schedule.cron`: standard 5 fields, or 6 with seconds first.
pub struct Cron {
    /// The expression as written, for logs and to notice a change at reload.
    pub expr: String,
    cron: croner::Cron,
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, crate::config::CronError> {
        let cron = crate::config::parse_cron(expr)?;
        Ok(Cron {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The first time strictly after `t` that the expression matches; None if it never does
    /// again (e.g. `0 0 30 2 *`).
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(t, false).ok()
    }
}

/// Counts scheduled runs; every `every`-th one is `--full` (0 = never).
#[derive(Debug, Default)]
pub struct FullEvery {
    /// `schedule.full_every`; a reload may change it.
    pub every: u32,
    /// Scheduled runs so far.
    count: u64,
}

impl FullEvery {
    pub fn new(every: u32) -> FullEvery {
        FullEvery { every, count: 0 }
    }

    /// Counts one more scheduled run; says whether it is a full one.
    pub fn next(&mut self) -> bool {
        self.count += 1;
        self.every > 0 && self.count.is_multiple_of(u64::from(self.every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields() {
        let c = Cron::parse("*/10 * * * *").unwrap();
        assert_eq!(
            c.next_after(&at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-01T10:10:00Z"))
        );
        assert_eq!(
            c.next_after(&at("2026-01-01T10:03:07Z")),
            Some(at("2026-01-01T10:10:00Z"))
        );
        let c = Cron::parse("*/15 * * * * *").unwrap();
        assert_eq!(
            c.next_after(&at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-01T10:00:15Z"))
        );
        let c = Cron::parse("0 3 * * 1").unwrap();
        assert_eq!(
            c.next_after(&at("2026-01-01T10:00:00Z")),
            Some(at("2026-01-05T03:00:00Z"))
        );
        assert!(Cron::parse("* * *").is_err());
        assert!(Cron::parse("61 * * * *").is_err());
    }

    #[test]
    fn every_nth_scheduled_run_is_full() {
        let mut f = FullEvery::new(3);
        let got: Vec<bool> = (0..7).map(|_| f.next()).collect();
        assert_eq!(got, [false, false, true, false, false, true, false]);
        let mut never = FullEvery::new(0);
        assert!((0..10).all(|_| !never.next()));
        let mut always = FullEvery::new(1);
        assert!((0..3).all(|_| always.next()));
    }
}
