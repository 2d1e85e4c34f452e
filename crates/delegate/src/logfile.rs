//! `delegate.log`, rotated the way the original delegate does it.
//!
//! A new file is started each day and whenever the current one would pass 50 MB; the
//! old one is renamed `delegate.log.<day>.<n>` (the day its lines were written, `n`
//! counting from 1 within that day). Rotated files are kept for today and the previous 10
//! days, and all files together stay under 1 GB: the oldest rotated files go first.
//! Files in the directory that do not follow that naming are never touched.
//!
//! [`LogFile`] is a plain `std::io::Write` and a `tracing_subscriber` `MakeWriter`, so the
//! logging setup (`telemetry.rs`) just plugs it in. The clock is a trait so tests can
//! change the day without waiting for midnight. The list of rotated files is read from
//! the directory once, at open, and kept in memory: the size cap is then checked on every
//! write without touching the file system.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, Local, NaiveDate};

/// The active file's name.
pub const FILE_NAME: &str = "delegate.log";

/// When to rotate and what to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start a new file when the current one would pass this size.
    pub max_file_bytes: u64,
    /// All files together, the current one included, stay at or under this size.
    pub max_total_bytes: u64,
    /// Keep rotated files of today and this many previous days.
    pub keep_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 50 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            keep_days: 10,
        }
    }
}

/// Tells the day. Local time, because operators read file names in their own days.
pub trait Clock: Send + Sync + 'static {
    fn today(&self) -> NaiveDate;

    /// The day a file was last written, for a `delegate.log` found at start-up.
    fn day_of(&self, t: SystemTime) -> NaiveDate {
        DateTime::<Local>::from(t).date_naive()
    }
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn today(&self) -> NaiveDate {
        Local::now().date_naive()
    }
}

/// The rotating log file. Clones share one file.
#[derive(Clone)]
pub struct LogFile {
    /// A std mutex: writes are short, blocking, and come from any thread.
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    limits: Limits,
    clock: Box<dyn Clock>,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// The day the current file's lines belong to.
    day: NaiveDate,
    /// Rotated files, oldest first.
    rotated: VecDeque<Rotated>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rotated {
    day: NaiveDate,
    n: u32,
    size: u64,
}

impl LogFile {
    /// Opens (or creates) `dir/delegate.log`, appending to what is there, and applies
    /// the retention rules to the files already present.
    pub fn open(dir: &Path, limits: Limits, clock: impl Clock) -> io::Result<LogFile> {
        fs::create_dir_all(dir)?;
        let file = open_append(&dir.join(FILE_NAME))?;
        let meta = file.metadata()?;
        let today = clock.today();
        let day = if meta.len() > 0 {
            meta.modified().map(|t| clock.day_of(t)).unwrap_or(today)
        } else {
            today
        };
        let mut inner = Inner {
            dir: dir.to_owned(),
            limits,
            clock: Box::new(clock),
            file,
            size: meta.len(),
            day,
            rotated: scan(dir)?,
        };
        // A file left from an earlier day starts today's file at once.
        if inner.day != today {
            inner.rotate(today)?;
        }
        inner.prune(today);
        Ok(LogFile {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic mid-write leaves at worst a partial line; the file is still usable.
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for LogFile {
    /// Writes all of `buf` to one file: a log line is never split across a rotation.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|inner| inner.write_record(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.with(|inner| inner.file.flush())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Inner {
    fn write_record(&mut self, buf: &[u8]) -> io::Result<()> {
        let today = self.clock.today();
        let len = buf.len() as u64;
        if today != self.day || (self.size > 0 && self.size + len > self.limits.max_file_bytes) {
            self.rotate(today)?;
        }
        self.file.write_all(buf)?;
        self.size += len;
        self.enforce_total();
        Ok(())
    }

    /// Renames the current file after its day and starts an empty one for `today`. An
    /// empty current file is not worth keeping: it just moves to the new day.
    fn rotate(&mut self, today: NaiveDate) -> io::Result<()> {
        if self.size > 0 {
            self.file.flush()?;
            let n = self
                .rotated
                .iter()
                .filter(|r| r.day == self.day)
                .map(|r| r.n)
                .max()
                .unwrap_or(0)
                + 1;
            let rotated = Rotated {
                day: self.day,
                n,
                size: self.size,
            };
            fs::rename(self.dir.join(FILE_NAME), self.dir.join(rotated.name()))?;
            self.file = open_append(&self.dir.join(FILE_NAME))?;
            self.size = 0;
            self.rotated.push_back(rotated);
            self.rotated.make_contiguous().sort();
        }
        if today != self.day {
            self.day = today;
            self.prune(today);
        }
        Ok(())
    }

    /// Applies both retention rules.
    fn prune(&mut self, today: NaiveDate) {
        let oldest_kept = today - chrono::Duration::days(i64::from(self.limits.keep_days));
        while self.rotated.front().is_some_and(|r| r.day < oldest_kept) {
            self.delete_oldest();
        }
        self.enforce_total();
    }

    fn enforce_total(&mut self) {
        let mut total: u64 = self.size + self.rotated.iter().map(|r| r.size).sum::<u64>();
        while total > self.limits.max_total_bytes {
            match self.delete_oldest() {
                Some(freed) => total -= freed,
                // Only the current file is left; it is never deleted under the writer.
                None => break,
            }
        }
    }

    /// Deletes the oldest rotated file; returns its size.
    fn delete_oldest(&mut self) -> Option<u64> {
        let oldest = self.rotated.pop_front()?;
        // If it is already gone (an operator cleaned up), it frees its space all the same.
        let _ = fs::remove_file(self.dir.join(oldest.name()));
        Some(oldest.size)
    }
}

impl Rotated {
    fn name(&self) -> String {
        format!("{FILE_NAME}.{}.{}", self.day.format("%Y-%m-%d"), self.n)
    }

    /// Parses `delegate.log.YYYY-MM-DD.N`; anything else is not ours.
    fn parse(name: &str, size: u64) -> Option<Rotated> {
        let rest = name.strip_prefix(FILE_NAME)?.strip_prefix('.')?;
        let (day, n) = rest.split_once('.')?;
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        let n = n.parse().ok().filter(|n| *n > 0)?;
        Some(Rotated { day, n, size })
    }
}

fn scan(dir: &Path) -> io::Result<VecDeque<Rotated>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        found.extend(Rotated::parse(&name, meta.len()));
    }
    found.sort();
    Ok(found.into())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock whose day the test sets.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<NaiveDate>>);

    impl FakeClock {
        fn new(day: &str) -> Self {
            FakeClock(Arc::new(Mutex::new(date(day))))
        }

        fn set(&self, day: &str) {
            *self.0.lock().unwrap() = date(day);
        }
    }

    impl Clock for FakeClock {
        fn today(&self) -> NaiveDate {
            *self.0.lock().unwrap()
        }

        fn day_of(&self, _: SystemTime) -> NaiveDate {
            self.today()
        }
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// The files in `dir` with their sizes, sorted by name.
    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    }

    fn expect(dir: &Path, want: &[(&str, u64)]) {
        let want: Vec<(String, u64)> = want.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
        assert_eq!(files(dir), want);
    }

    /// One 400-byte log line.
    fn line(log: &mut LogFile) {
        let mut l = vec![b'x'; 399];
        l.push(b'\n');
        log.write_all(&l).unwrap();
    }

    const SMALL: Limits = Limits {
        max_file_bytes: 1024,
        max_total_bytes: 4096,
        keep_days: 2,
    };

    #[test]
    fn files_rotate_by_size_by_day_and_are_pruned_by_total_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new("2026-11-23");
        let mut log = LogFile::open(dir.path(), SMALL, clock.clone()).unwrap();
        expect(dir.path(), &[("delegate.log", 0)]);

        // Two lines fit in 1 KiB; the third would pass it and starts a new file.
        line(&mut log);
        line(&mut log);
        expect(dir.path(), &[("delegate.log", 800)]);
        line(&mut log);
        expect(dir.path(), &[("delegate.log", 400), ("delegate.log.2026-11-23.1", 800)]);

        // A new day starts a new file; the old one is named after the day it was written.
        clock.set("2026-11-24");
        line(&mut log);
        expect(
            dir.path(),
            &[
                ("delegate.log", 400),
                ("delegate.log.2026-11-23.1", 800),
                ("delegate.log.2026-11-23.2", 400),
            ],
        );

        // Filling the day: each file holds two lines.
        for _ in 0..5 {
            line(&mut log);
        }
        expect(
            dir.path(),
            &[
                ("delegate.log", 800),
                ("delegate.log.2026-11-23.1", 800),
                ("delegate.log.2026-11-23.2", 400),
                ("delegate.log.2026-11-24.1", 800),
                ("delegate.log.2026-11-24.2", 800),
            ],
        );
        // 4000 bytes in all is still under the 4 KiB cap...
        line(&mut log);
        expect(
            dir.path(),
            &[
                ("delegate.log", 400),
                ("delegate.log.2026-11-23.1", 800),
                ("delegate.log.2026-11-23.2", 400),
                ("delegate.log.2026-11-24.1", 800),
                ("delegate.log.2026-11-24.2", 800),
                ("delegate.log.2026-11-24.3", 800),
            ],
        );
        // ...one line more would pass it: the oldest file goes first.
        line(&mut log);
        expect(
            dir.path(),
            &[
                ("delegate.log", 800),
                ("delegate.log.2026-11-23.2", 400),
                ("delegate.log.2026-11-24.1", 800),
                ("delegate.log.2026-11-24.2", 800),
                ("delegate.log.2026-11-24.3", 800),
            ],
        );

        // Two days later, files of today and the previous two days are kept.
        clock.set("2026-11-26");
        line(&mut log);
        expect(
            dir.path(),
            &[
                ("delegate.log", 400),
                ("delegate.log.2026-11-24.1", 800),
                ("delegate.log.2026-11-24.2", 800),
                ("delegate.log.2026-11-24.3", 800),
                ("delegate.log.2026-11-24.4", 800),
            ],
        );
        clock.set("2026-11-27");
        line(&mut log);
        expect(dir.path(), &[("delegate.log", 400), ("delegate.log.2026-11-26.1", 400)]);
    }

    #[test]
    fn a_restart_appends_and_keeps_counting_the_days_files() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new("2026-11-23");
        let mut log = LogFile::open(dir.path(), SMALL, clock.clone()).unwrap();
        for _ in 0..3 {
            line(&mut log);
        }
        drop(log);
        let mut log = LogFile::open(dir.path(), SMALL, clock.clone()).unwrap();
        expect(dir.path(), &[("delegate.log", 400), ("delegate.log.2026-11-23.1", 800)]);
        line(&mut log);
        line(&mut log);
        expect(
            dir.path(),
            &[
                ("delegate.log", 400),
                ("delegate.log.2026-11-23.1", 800),
                ("delegate.log.2026-11-23.2", 800),
            ],
        );
    }

    #[test]
    fn a_log_left_from_an_earlier_day_is_rotated_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new("2026-11-23");
        let mut log = LogFile::open(dir.path(), SMALL, clock.clone()).unwrap();
        line(&mut log);
        drop(log);
        // The file was last written "on the 23rd"; the delegate starts again on the 24th.
        struct Later;
        impl Clock for Later {
            fn today(&self) -> NaiveDate {
                date("2026-11-24")
            }
            fn day_of(&self, _: SystemTime) -> NaiveDate {
                date("2026-11-23")
            }
        }
        LogFile::open(dir.path(), SMALL, Later).unwrap();
        expect(dir.path(), &[("delegate.log", 0), ("delegate.log.2026-11-23.1", 400)]);
    }

    #[test]
    fn a_line_larger_than_the_size_limit_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), SMALL, FakeClock::new("2026-11-23")).unwrap();
        line(&mut log);
        log.write_all(&[b'y'; 2000]).unwrap();
        expect(
            dir.path(),
            &[("delegate.log", 2000), ("delegate.log.2026-11-23.1", 400)],
        );
    }

    #[test]
    fn other_files_in_the_log_directory_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["notes.txt", "delegate.log.bak", "delegate.log.2026-11-01.x"] {
            fs::write(dir.path().join(name), vec![b'z'; 5000]).unwrap();
        }
        let mut log = LogFile::open(dir.path(), SMALL, FakeClock::new("2026-11-23")).unwrap();
        for _ in 0..20 {
            line(&mut log);
        }
        let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
        for name in ["notes.txt", "delegate.log.bak", "delegate.log.2026-11-01.x"] {
            assert!(names.iter().any(|n| n == name), "{name} was removed: {names:?}");
        }
    }

    #[test]
    fn rotated_names_parse_back() {
        let r = Rotated {
            day: date("2026-11-23"),
            n: 12,
            size: 7,
        };
        assert_eq!(r.name(), "delegate.log.2026-11-23.12");
        assert_eq!(Rotated::parse(&r.name(), 7), Some(r));
        for other in [
            "delegate.log",
            "delegate.log.2026-11-23",
            "delegate.log.2026-13-01.1",
            "delegate.log.2026-11-23.0",
        ] {
            assert_eq!(Rotated::parse(other, 1), None, "{other}");
        }
    }
}
