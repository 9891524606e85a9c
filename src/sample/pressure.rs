//! Pressure stall information (PSI): `/proc/pressure/{memory,cpu,io}` system-wide and a
//! cgroup v2 directory's `{memory,cpu,io}.pressure`.
//!
//! A pressure file has one or two lines:
//!
//! ```text
//! some avg10=0.52 avg60=0.17 avg300=0.03 total=11842803
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! The averages are percentages of wall time (here divided by 100 into ratios); `total` is the
//! cumulative stall time in microseconds, turned into a stall rate (seconds stalled per second)
//! by keeping the previous reading. `cpu`'s `full` line is missing before Linux 5.13. The
//! files are opened once and re-read with `pread`; a kernel without PSI (or with `psi=0`)
//! has no files, or files that fail to read (`EOPNOTSUPP`), and gives `None`.
//!
//! The kernel recomputes the averages every 2 s (`PSI_FREQ`), so the files are re-read at
//! most every [`REFRESH`]; samples in between reuse the last reading (at a 100 ms interval
//! that saves 19 of 20 reads, about 5 µs each).

use std::path::Path;
use std::time::{Duration, Instant};

use perfpilot_strategies::{PressureLine, PressureResource, PressureSet, ResourcePressure};

use super::procfs::ProcFile;

/// The system-wide PSI directory.
pub(crate) const SYSTEM_DIR: &str = "/proc/pressure";

/// How often the files are re-read: the kernel's averaging period.
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// The three pressure files of one scope, kept open, with the previous `total`s for the stall
/// rates, and the last reading with its time.
#[derive(Debug)]
pub(crate) struct PressureReader {
    files: [Option<ResourceFile>; 3],
    last: Option<(Instant, Option<PressureSet>)>,
}

#[derive(Debug)]
struct ResourceFile {
    file: ProcFile,
    /// When the previous reading was taken and its `some` and `full` totals.
    previous: Option<(Instant, u64, Option<u64>)>,
}

impl PressureReader {
    /// `/proc/pressure/*`; `None` where the kernel has no PSI.
    pub(crate) fn system() -> Option<Self> {
        Self::open(Path::new(SYSTEM_DIR), |resource| resource.name().to_owned())
    }

    /// A cgroup v2 directory's `*.pressure`; `None` where it has none.
    pub(crate) fn cgroup(dir: &Path) -> Option<Self> {
        Self::open(dir, |resource| format!("{}.pressure", resource.name()))
    }

    fn open(dir: &Path, file_name: impl Fn(PressureResource) -> String) -> Option<Self> {
        let files = PressureResource::ALL.map(|resource| {
            let mut file = ProcFile::open(&dir.join(file_name(resource)), 256)?;
            // With `psi=0` the files exist but reading them fails.
            let readable = file
                .read(false)
                .is_some_and(|t| parse_pressure(&t).is_some());
            readable.then_some(ResourceFile {
                file,
                previous: None,
            })
        });
        files
            .iter()
            .any(Option::is_some)
            .then_some(PressureReader { files, last: None })
    }

    /// Reads the three files, or gives the last reading if it is less than [`REFRESH`] old;
    /// `None` if none of them reads (the cgroup has been removed).
    pub(crate) fn read(&mut self, now: Instant) -> Option<PressureSet> {
        if let Some((at, reading)) = &self.last {
            if now.saturating_duration_since(*at) < REFRESH {
                return *reading;
            }
        }
        let [memory, cpu, io] = self
            .files
            .each_mut()
            .map(|file| file.as_mut().and_then(|f| f.read(now)));
        let reading = (memory.is_some() || cpu.is_some() || io.is_some()).then_some(PressureSet {
            memory,
            cpu,
            io,
        });
        self.last = Some((now, reading));
        reading
    }
}

impl ResourceFile {
    fn read(&mut self, now: Instant) -> Option<ResourcePressure> {
        let mut pressure = parse_pressure(&self.file.read(false)?)?;
        let full_total = pressure.full.map(|f| f.total_us);
        if let Some((then, some_then, full_then)) = self.previous {
            let wall_us = now.saturating_duration_since(then).as_secs_f64() * 1e6;
            if wall_us > 0.0 {
                // Microseconds of stall over microseconds of wall time: six decimals.
                let rate = |now: u64, then: u64| {
                    super::round_decimals(now.saturating_sub(then) as f64 / wall_us, 6)
                };
                pressure.some.stall_rate = Some(rate(pressure.some.total_us, some_then));
                if let (Some(full), Some(full_then)) = (pressure.full.as_mut(), full_then) {
                    full.stall_rate = Some(rate(full.total_us, full_then));
                }
            }
        }
        self.previous = Some((now, pressure.some.total_us, full_total));
        Some(pressure)
    }
}

/// A pressure file's text; `None` without a valid `some` line. A malformed `full` line is
/// taken as absent.
pub(crate) fn parse_pressure(text: &str) -> Option<ResourcePressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("some", rest)) => some = parse_line(rest),
            Some(("full", rest)) => full = parse_line(rest),
            _ => {}
        }
    }
    Some(ResourcePressure { some: some?, full })
}

/// `avg10=0.52 avg60=0.17 avg300=0.03 total=11842803`, in any order; every field required.
fn parse_line(fields: &str) -> Option<PressureLine> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields.split_ascii_whitespace() {
        let (key, value) = field.split_once('=')?;
        let ratio = || {
            let percent: f64 = value.parse().ok()?;
            // The kernel writes percents with two decimals: as a ratio, four. Rounding the
            // scaled value and dividing by a power of ten gives the f64 nearest the decimal
            // the kernel wrote (0.41 % -> 0.0041, not 0.0040999999999999995).
            (percent.is_finite() && percent >= 0.0)
                .then(|| super::round_decimals(percent / 100.0, 4))
        };
        match key {
            "avg10" => avg10 = ratio(),
            "avg60" => avg60 = ratio(),
            "avg300" => avg300 = ratio(),
            "total" => total = value.parse().ok(),
            _ => {}
        }
    }
    Some(PressureLine {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_us: total?,
        stall_rate: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `/proc/pressure/io` of a 6.18 kernel.
    const IO: &str = "some avg10=0.79 avg60=0.40 avg300=1.27 total=139807959\n\
                      full avg10=0.00 avg60=0.05 avg300=0.83 total=60521137\n";
    /// `/proc/pressure/cpu` of a 5.4 kernel: no `full` line.
    const CPU_5_4: &str = "some avg10=97.91 avg60=91.55 avg300=45.45 total=3666846431\n";

    #[test]
    fn both_lines_as_ratios_and_microseconds() {
        let io = parse_pressure(IO).unwrap();
        assert_eq!(io.some.avg10, 0.0079);
        assert_eq!(io.some.avg60, 0.004);
        assert_eq!(io.some.avg300, 0.0127);
        assert_eq!(io.some.total_us, 139_807_959);
        assert_eq!(io.some.stall_rate, None);
        let full = io.full.unwrap();
        assert_eq!((full.avg10, full.avg60), (0.0, 0.0005));
        assert_eq!(full.total_us, 60_521_137);
    }

    #[test]
    fn cpu_without_a_full_line() {
        let cpu = parse_pressure(CPU_5_4).unwrap();
        assert!((cpu.some.avg10 - 0.9791).abs() < 1e-12);
        assert_eq!(cpu.full, None);
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert_eq!(parse_pressure(""), None);
        assert_eq!(
            parse_pressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            None
        );
        assert_eq!(
            parse_pressure("some avg10=0.52 avg60=0.17 total=118\n"),
            None
        );
        assert_eq!(
            parse_pressure("some avg10=x avg60=0.17 avg300=0.03 total=1\n"),
            None
        );
        assert_eq!(
            parse_pressure("some avg10=-1 avg60=0.17 avg300=0.03 total=1\n"),
            None
        );
        assert_eq!(
            parse_pressure("some avg10 avg60=0.17 avg300=0.03 total=1\n"),
            None
        );
        let bad_full = "some avg10=1.00 avg60=0.17 avg300=0.03 total=1\nfull avg10=zz\n";
        assert_eq!(parse_pressure(bad_full).unwrap().full, None);
    }

    #[test]
    fn the_system_files_of_this_machine_and_their_stall_rate() {
        let Some(mut reader) = PressureReader::system() else {
            return crate::test_support::skip("this kernel has no PSI (/proc/pressure)");
        };
        let start = Instant::now();
        let first = reader.read(start).unwrap();
        let cpu = first.cpu.expect("/proc/pressure/cpu");
        assert!((0.0..=1.0).contains(&cpu.some.avg10), "{cpu:?}");
        assert_eq!(cpu.some.stall_rate, None, "no window yet");
        // Within the kernel's 2 s averaging period the last reading is reused.
        let cached = reader.read(start + Duration::from_millis(250)).unwrap();
        assert_eq!(cached, first);
        let second = reader.read(start + REFRESH).unwrap();
        // The rate is the growth of the stall counter over the window the reader was told
        // (REFRESH), in stalled µs per µs; the kernel's counters never go back.
        let window_us = REFRESH.as_secs_f64() * 1e6;
        for (name, then, now) in [
            ("memory", first.memory, second.memory),
            ("io", first.io, second.io),
        ] {
            let (then, now) = (then.unwrap().some, now.unwrap().some);
            assert!(now.total_us >= then.total_us, "{name}: {then:?} {now:?}");
            let expected = (now.total_us - then.total_us) as f64 / window_us;
            let rate = now.stall_rate.unwrap();
            assert!(
                (rate - expected).abs() < 1e-12,
                "{name}: rate {rate}, counters say {expected}"
            );
        }
    }

    /// The cost of reading PSI per sample, and of a whole sample with and without it. Run
    /// with `cargo test --release --lib psi_sample_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a test; run it in release"]
    fn psi_sample_cost() {
        use crate::sample::{median_time, Sampler, SamplerSettings, Target};
        let median = |f: &mut dyn FnMut()| median_time(2001, f);
        let mut system = PressureReader::system().expect("PSI");
        // Each read a refresh period after the last, so every one reads the files.
        let mut at = Instant::now();
        let psi = median(&mut || {
            at += REFRESH;
            std::hint::black_box(system.read(at));
        });
        let reopened = median(&mut || {
            let mut reader = PressureReader::system().unwrap();
            std::hint::black_box(reader.read(Instant::now()));
        });
        let mut sampler = Sampler::new(SamplerSettings::default());
        let whole = median(&mut || {
            std::hint::black_box(sampler.sample());
        });
        sampler.system_pressure = None;
        let without = median(&mut || {
            std::hint::black_box(sampler.sample());
        });
        let procs = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = procs.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let mut group = Sampler::for_target(SamplerSettings::default(), Target::Cgroup(own.into()));
        let count = group.sample().process_count.unwrap();
        let group_sample = median(&mut || {
            std::hint::black_box(group.sample());
        });
        println!("| read | median |\n|---|---|");
        println!("| /proc/pressure/{{memory,cpu,io}}, fds kept open | {psi:?} |");
        println!("| the same, opening the three files each time | {reopened:?} |");
        println!("| whole self sample with system PSI (re-read every 2 s) | {whole:?} |");
        println!("| whole self sample without PSI | {without:?} |");
        println!("| whole cgroup-target sample of this test's cgroup ({count} processes) | {group_sample:?} |");
    }
}
