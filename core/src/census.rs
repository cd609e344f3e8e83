//! The device census (issue #21): how many distinct devices each channel offered,
//! served (downloaded) or saw running each version, in the last hour, day and week —
//! estimated, never listed, so that no device id is ever kept.
//!
//! **Sketch.** One *sliding-window HyperLogLog* per series (channel × version × state):
//! Chabchoub & Hébrail, "Sliding HyperLogLog: Estimating cardinality in a data stream
//! over a sliding window" (ICDM workshops, 2010). Each of the m = 2^14 registers keeps
//! its *list of future possible maxima*: pairs (minute, rank) whose rank strictly
//! decreases as the minute increases. Inserting (t, R) drops every pair of the register
//! with minute <= t and rank <= R and adds (t, R) unless a pair with minute >= t and
//! rank >= R already covers it; pairs older than the longest window (7 d) are dropped.
//! The register's value for a window w at `now` is the largest rank among its pairs
//! newer than `now - w`, so one structure answers every window exactly, and a union
//! (merge of replicas, or of several series) is the union of the pairs.
//!
//! **Why no crate.** Last round measured Cloudflare's `cardinality-estimator` with one
//! sketch per time bucket (1 h = 6 × 10 min, 24 h = 12 × 2 h, 7 d = 7 × 1 d): 461.6 MB
//! when all 1,500 series (100 channels × 5 versions × 3 states) are dense, far from a
//! 16 MiB budget. Windows need a timestamp per register, which no maintained
//! HyperLogLog crate offers.
//!
//! **Estimator.** Otmar Ertl, "New cardinality estimation algorithms for HyperLogLog
//! sketches" (2017), the improved raw estimator (his σ and τ functions over the
//! histogram of register values): no bias tables, no switch to linear counting, and
//! accurate from 0 up. With p = 14 the relative standard error is about 0.81 %.
//!
//! **Hash.** The first 8 bytes (big endian) of SHA-256 of the device id, fixed forever
//! so that replicas and gateway versions agree: the top 14 bits pick the register, the
//! rank is the number of leading zeros of the remaining 50 bits plus one (51 when all are
//! zero).
//!
//! **Storage.** A pair is packed as `register (14 bits) | minute (32 bits, minutes since
//! the Unix epoch) | rank (6 bits)` in a `u64` — in this order so that the integers sort
//! as (register, minute), the order the lists are kept in; that is the form of a
//! [`Report`]. In memory a series keeps them sorted in 16 blocks of 1,024 registers (an
//! insertion moves at most one block's tail), 4 bytes a pair: the register within the
//! block (10 bits), the minute as a 16-bit offset from the series' base minute (moved,
//! rewriting the pairs, about every 38 days), the rank (6 bits). That halves the 8 bytes
//! of a `u64` and is what makes 10,000 devices a channel fit 16 MiB (below). A pair that
//! a new one replaces is overwritten in place (a device polling again replaces its own
//! pair; several replaced pairs become copies of the new one, removed by the next
//! [`Census::expire`]), so the common case moves nothing.
//!
//! **Memory.** [`Census::new`] takes a byte budget (the gateway's default is 16 MiB)
//! covering the pair lists (their capacity, 4 bytes a pair) and each series' fixed part;
//! past it a pair that would grow memory is refused and counted ([`Census::refused`]),
//! while updates in place go on and expiry frees memory. A series holds at most one pair
//! per device seen in the week and at most 51 per register, so at most
//! 16,384 × 51 × 4 B ≈ 3.2 MiB. Measured (test `memory_figures`, devices spread over a
//! day, each offered one version, downloaded one, running one): one series of 1 M ids,
//! 59,409 pairs, 0.33 MiB; 100 channels × 5 versions × 3 states (700 series used) with
//! 1,000 devices a channel, 1.97 MiB; with 10,000 devices a channel, 11.67 MiB, nothing
//! refused. A busy series (over 16,384 pairs: a million ids in a minute) takes 16 KiB
//! more for the ranks of the current minute ([`Recent`]), which let a record that changes
//! nothing skip the search. 16 MiB hold about 4 M pairs (device × state × version seen in the week);
//! beyond that the estimates undercount and `refused` says so.
//!
//! **Privacy.** Only (register, minute, rank) is kept and exported ([`Report`]), never an
//! id or its full hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Register index bits.
pub const PRECISION: u8 = 14;
/// Number of registers.
const M: usize = 1 << PRECISION;
/// Hash bits left for the rank.
const Q: u32 = 64 - PRECISION as u32;
/// Largest rank (all `Q` bits zero).
pub const MAX_RANK: u8 = (Q + 1) as u8;
/// Blocks a series' pairs are split into (by register), each 1,024 registers.
const BLOCKS: usize = 16;
const REGISTERS_PER_BLOCK: usize = M / BLOCKS;
/// The longest window, after which pairs are dropped.
const HORIZON_MINUTES: u32 = 7 * 24 * 60;
/// Largest number of pairs a normalised series can hold (51 ranks in each register).
const MAX_PAIRS: usize = M * MAX_RANK as usize;
/// Longest channel or version name a report may carry.
const MAX_NAME: usize = 256;
/// Most series a report may carry.
const MAX_SERIES: usize = 100_000;
/// Bytes counted for a (channel, version) beside its names and pair lists: its three
/// series' fixed parts and its map entries.
const VERSION_OVERHEAD: usize = std::mem::size_of::<Versions>() + 64;

/// The windows every figure is given for.
pub const WINDOWS: [(&str, Duration); 3] = [
    ("1h", Duration::from_secs(3600)),
    ("24h", Duration::from_secs(24 * 3600)),
    ("7d", Duration::from_secs(7 * 24 * 3600)),
];

/// What a device did with a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The gateway answered it with this version (an offer, or "up to date").
    Offered,
    /// The gateway served it this version's binary.
    Downloaded,
    /// The device reported running this version.
    Running,
}

impl State {
    const ALL: [State; 3] = [State::Offered, State::Downloaded, State::Running];

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a [`Report`] was refused by [`Merged::add`]; nothing of it was merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CensusError {
    #[error("census report of precision {found}, expected {PRECISION}")]
    Precision { found: u8 },
    #[error("census report: register {register} out of range (fewer than {M})")]
    Register { register: u64 },
    #[error("census report: rank {rank} out of range (1 to {MAX_RANK})")]
    Rank { rank: u8 },
    #[error("census report: {count} pairs in one series, more than {MAX_PAIRS}")]
    TooManyPairs { count: usize },
    #[error("census report: {count} series, more than {MAX_SERIES}")]
    TooManySeries { count: usize },
    #[error("census report: a channel or version name of {len} bytes, longer than {MAX_NAME}")]
    NameTooLong { len: usize },
}

/// A device id's hash: computed once per request, recorded in several series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHash(u64);

impl DeviceHash {
    /// The first 8 bytes of SHA-256 of `device` (fixed forever: replicas must agree).
    pub fn of(device: &str) -> Self {
        let digest = Sha256::digest(device.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }

    /// (register, rank).
    fn split(self) -> (usize, u8) {
        let register = (self.0 >> Q) as usize;
        let rest = self.0 << PRECISION;
        let rank = if rest == 0 { MAX_RANK } else { rest.leading_zeros() as u8 + 1 };
        (register, rank)
    }
}

fn pack(register: usize, minute: u32, rank: u8) -> u64 {
    ((register as u64) << 38) | (u64::from(minute) << 6) | u64::from(rank)
}

fn register_of(pair: u64) -> u64 {
    pair >> 38
}

fn minute_of(pair: u64) -> u32 {
    ((pair >> 6) & 0xffff_ffff) as u32
}

fn rank_of(pair: u64) -> u8 {
    (pair & 0x3f) as u8
}

/// Whole minutes since the Unix epoch (0 before it, saturating after 2^32 minutes).
fn minute(at: SystemTime) -> u32 {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs / 60).unwrap_or(u32::MAX)
}

/// Pairs newer than this minute are inside `window` before `now`.
fn cutoff(window: Duration, now: SystemTime) -> u32 {
    let window = u32::try_from(window.as_secs() / 60).unwrap_or(u32::MAX);
    minute(now).saturating_sub(window)
}

/// One sliding HyperLogLog: sorted packed pairs, in blocks of registers. In memory a
/// pair takes 4 bytes: `register within its block (10 bits) | minutes since base (16
/// bits) | rank (6 bits)`, still sorting as (register, minute); `base` is moved (every
/// pair rewritten, about every 38 days) before a minute would not fit.
#[derive(Default)]
struct Series {
    /// The minute offsets count from; `None` while empty.
    base: Option<u32>,
    blocks: [Vec<u32>; BLOCKS],
}

/// The first index of sorted `block` whose pair is not below `key`, searched outward
/// from `guess`. Hashed devices spread evenly over registers, so a register's pairs sit
/// near `register × len / registers`: galloping from there touches a cache line or two
/// where a binary search over the block would miss the cache a dozen times per request
/// (it was most of the census's cost in the gateway's `/version`, measured with perf).
fn lower_bound_near(block: &[u32], key: u32, guess: usize) -> usize {
    let guess = guess.min(block.len());
    // The answer lies in lo..=hi; probes move away from `guess` by 1, 2, 4...
    let (mut lo, mut hi) = (0, block.len());
    let mut step = 1;
    if guess < block.len() && block[guess] < key {
        lo = guess + 1;
        while let Some(probe) = guess.checked_add(step).filter(|&p| p < block.len()) {
            if block[probe] >= key {
                hi = probe;
                break;
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        hi = guess;
        while let Some(probe) = guess.checked_sub(step) {
            if block[probe] < key {
                lo = probe + 1;
                break;
            }
            hi = probe;
            step *= 2;
        }
    }
    lo + block[lo..hi].partition_point(|&e| e < key)
}

/// Largest minute offset from a series' base.
const MAX_OFFSET: u32 = 0xffff;

fn local(register_in_block: usize, offset: u32, rank: u8) -> u32 {
    ((register_in_block as u32) << 22) | (offset << 6) | u32::from(rank)
}

fn local_register(e: u32) -> u32 {
    e >> 22
}

fn local_offset(e: u32) -> u32 {
    (e >> 6) & MAX_OFFSET
}

fn local_rank(e: u32) -> u8 {
    (e & 0x3f) as u8
}

impl Series {
    fn is_empty(&self) -> bool {
        self.blocks.iter().all(Vec::is_empty)
    }

    fn capacity_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.capacity() * 4).sum()
    }

    fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// The offset of `minute`, moving the base when it does not fit; `None` for a
    /// minute more than [`MAX_OFFSET`] before the newest pair (more than 45 days: past
    /// every window), which is not recorded.
    fn offset(&mut self, minute: u32) -> Option<u32> {
        let base = *self.base.get_or_insert(minute.saturating_sub(HORIZON_MINUTES));
        if minute < base {
            let newest = self.blocks.iter().flatten().map(|&e| local_offset(e)).max().unwrap_or(0);
            if base - minute + newest > MAX_OFFSET {
                return None;
            }
            self.rebase(minute);
        } else if minute - base > MAX_OFFSET {
            // What is a week older than `minute` goes: it is past every window then.
            self.rebase(minute.saturating_sub(HORIZON_MINUTES));
        }
        self.base.map(|base| minute - base)
    }

    /// Counts offsets from `base`, dropping pairs older than it.
    fn rebase(&mut self, base: u32) {
        let old = self.base.unwrap_or(base);
        for block in &mut self.blocks {
            block.retain(|&e| old + local_offset(e) >= base);
            for e in block.iter_mut() {
                let offset = old + local_offset(*e) - base;
                *e = local(local_register(*e) as usize, offset, local_rank(*e));
            }
        }
        self.base = Some(base);
    }

    /// Inserts (minute, rank) in `register`; `grow` is asked for the bytes of any new
    /// capacity and may refuse them (false: the pair was refused).
    fn insert(&mut self, register: usize, minute: u32, rank: u8, grow: impl FnMut(usize) -> bool) -> bool {
        let Some(minute) = self.offset(minute) else { return true };
        let block = &mut self.blocks[register / REGISTERS_PER_BLOCK];
        let register = register % REGISTERS_PER_BLOCK;
        let new = local(register, minute, rank);
        let lo = lower_bound_near(block, local(register, 0, 0), register * block.len() / REGISTERS_PER_BLOCK);
        let hi = lo + block[lo..].iter().take_while(|&&e| local_register(e) == register as u32).count();
        // First pair at or after `minute`: the largest rank among those not older.
        let at = lo + block[lo..hi].partition_point(|&e| local_offset(e) < minute);
        if at < hi && local_rank(block[at]) >= rank {
            return true;
        }
        // Not covered: every pair at `minute` has a lower rank, so is replaced too.
        let end = at + block[at..hi].partition_point(|&e| local_offset(e) == minute);
        // The pairs up to `end` with rank <= `rank` (the last ones: ranks decrease).
        let from = lo + block[lo..end].partition_point(|&e| local_rank(e) > rank);
        if from < end {
            block[from..end].fill(new);
            return true;
        }
        // A copy left by an earlier replacement in this register makes room in place.
        if let Some(d) = (lo..hi.saturating_sub(1)).find(|&i| block[i] == block[i + 1]) {
            if d >= from {
                block.copy_within(from..=d, from + 1);
                block[from] = new;
            } else {
                block.copy_within(d + 1..from, d);
                block[from - 1] = new;
            }
            return true;
        }
        if block.len() == block.capacity() && !reserve(block, grow) {
            return false;
        }
        block.insert(from, new);
        true
    }

    /// Drops pairs not newer than `horizon` and the copies left by replacements, and
    /// gives back capacity left mostly unused; returns the change of capacity in bytes.
    fn expire(&mut self, horizon: u32) -> isize {
        let before = self.capacity_bytes();
        let base = self.base.unwrap_or(0);
        for block in &mut self.blocks {
            block.retain(|&e| base + local_offset(e) > horizon);
            block.dedup();
            if block.is_empty() || block.capacity() > block.len() + block.len() / 2 + 8 {
                block.shrink_to(block.len() + block.len() / 4);
            }
        }
        if self.is_empty() {
            self.base = None;
        }
        self.capacity_bytes() as isize - before as isize
    }

    /// The pairs as a report carries them (absolute, `pack`ed), sorted.
    fn pairs(&self) -> Vec<u64> {
        let base = self.base.unwrap_or(0);
        let mut pairs = Vec::with_capacity(self.blocks.iter().map(Vec::len).sum());
        for (b, block) in self.blocks.iter().enumerate() {
            pairs.extend(block.iter().map(|&e| {
                let register = b * REGISTERS_PER_BLOCK + local_register(e) as usize;
                pack(register, base + local_offset(e), local_rank(e))
            }));
        }
        pairs.dedup();
        pairs
    }
}

/// Grows a full block by a quarter (at least 8 pairs), or by one pair when that is all
/// the budget allows.
fn reserve(block: &mut Vec<u32>, mut grow: impl FnMut(usize) -> bool) -> bool {
    let want = (block.len() / 4).max(8);
    for additional in [want, 1] {
        if grow(additional * 4) {
            if block.try_reserve_exact(additional).is_err() {
                return false;
            }
            return true;
        }
    }
    false
}

/// A series holding this many pairs (64 KiB) is busy: it gets a [`Recent`] (16 KiB more,
/// from the budget) so that a device seen again this minute costs one byte's load, not a
/// search. A million ids polling within a minute make about 80,000 pairs; 10,000
/// devices a channel spread over a day stay below it (`memory_figures`).
const BUSY_PAIRS: usize = 16_384;

/// One series, and the ranks it took this minute once it is busy.
#[derive(Default)]
struct Cell {
    series: Mutex<Series>,
    recent: Recent,
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held: the pair lists by capacity and the [`Recent`] ranks.
    fn bytes(&self, series: &Series) -> usize {
        series.capacity_bytes() + self.recent.bytes()
    }
}

/// The largest rank each register took in the newest minute recorded, read without the
/// series' lock. In the gateway most records change nothing (at 90,000 polls a second
/// over a million ids, each register sees hundreds a minute and keeps the few that raise
/// its rank), yet each one searched its register's pairs under the lock: cache misses
/// measured as most of the census's cost (`ota-gateway/bench/RESULTS.md`). A record of
/// (minute, rank) this filter holds a rank `>= rank` for is covered by a pair already
/// kept (minute at least as new, rank at least as high: what [`Series::insert`] keeps),
/// so skipping it changes nothing. Any doubt (another minute, no filter) takes the lock.
#[derive(Default)]
struct Recent {
    /// The minute `ranks` holds (0 before the first).
    minute: AtomicU32,
    /// One rank per register, allocated once the series is busy ([`BUSY_PAIRS`]).
    ranks: OnceLock<Box<[AtomicU8]>>,
}

impl Recent {
    fn bytes(&self) -> usize {
        self.ranks.get().map_or(0, |r| r.len())
    }

    /// Whether a pair kept already covers (register, minute, rank).
    fn covers(&self, register: usize, minute: u32, rank: u8) -> bool {
        let Some(ranks) = self.ranks.get() else { return false };
        // Acquire: a minute seen here was stored after its ranks were cleared.
        self.minute.load(Ordering::Acquire) == minute && ranks[register].load(Ordering::Relaxed) >= rank
    }

    /// Notes (register, minute, rank) once the series holds it; under the series' lock,
    /// so one writer at a time.
    fn note(&self, register: usize, minute: u32, rank: u8) {
        let Some(ranks) = self.ranks.get() else { return };
        let current = self.minute.load(Ordering::Relaxed);
        if minute < current {
            return;
        }
        if minute > current {
            // A reader still on the old minute may see a cleared rank (it takes the lock)
            // or one of the new minute (a newer pair with that rank covers its record).
            ranks.iter().for_each(|r| r.store(0, Ordering::Relaxed));
            self.minute.store(minute, Ordering::Release);
        }
        ranks[register].fetch_max(rank, Ordering::Relaxed);
    }

    /// Forgets a minute not newer than `horizon`: its pairs are expired.
    fn forget(&self, horizon: u32) {
        let Some(ranks) = self.ranks.get() else { return };
        if self.minute.load(Ordering::Relaxed) <= horizon {
            self.minute.store(0, Ordering::Release);
            ranks.iter().for_each(|r| r.store(0, Ordering::Relaxed));
        }
    }
}

/// The three series of one version of one channel.
type Versions = [Cell; 3];

/// One replica's sketches. `record` takes `&self`: a read lock on the map of series and
/// a lock on the one series written.
pub struct Census {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
    channels: RwLock<HashMap<String, HashMap<String, Versions>>>,
}

impl Census {
    /// An empty census that holds at most `limit_bytes` (approximately: pair lists by
    /// capacity, the fixed part of each series, names).
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            limit: limit_bytes,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            channels: RwLock::new(HashMap::new()),
        }
    }

    /// Records that `device` was in `state` of `version` of `channel` at `at`.
    pub fn record(&self, channel: &str, version: &str, state: State, device: &str, at: SystemTime) {
        self.record_hash(channel, version, state, DeviceHash::of(device), at);
    }

    /// What `device` was seen doing in `channel` at `at`, each `(state, version)` as
    /// [`Census::record_hash`] records it, under one lock and one lookup of the channel
    /// (a `/version` poll is offered one version and runs another).
    pub fn record_seen(&self, channel: &str, device: DeviceHash, at: SystemTime, seen: &[(State, &str)]) {
        let (register, rank) = device.split();
        let minute = minute(at);
        let mut missing = false;
        {
            let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
            let versions = channels.get(channel);
            for &(state, version) in seen {
                match versions.and_then(|c| c.get(version)) {
                    Some(cells) => self.insert(&cells[state.index()], register, minute, rank),
                    None => missing = true,
                }
            }
        }
        // A version seen for the first time: the slow way, for all (recording one again
        // changes nothing).
        if missing {
            for &(state, version) in seen {
                self.record_hash(channel, version, state, device, at);
            }
        }
    }

    /// [`Census::record`] with the id hashed already (one hash for several states).
    pub fn record_hash(&self, channel: &str, version: &str, state: State, device: DeviceHash, at: SystemTime) {
        let (register, rank) = device.split();
        let minute = minute(at);
        {
            let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(versions) = channels.get(channel).and_then(|c| c.get(version)) {
                self.insert(&versions[state.index()], register, minute, rank);
                return;
            }
        }
        let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
        if !channels.get(channel).is_some_and(|c| c.contains_key(version)) {
            let cost =
                VERSION_OVERHEAD + version.len() + if channels.contains_key(channel) { 0 } else { channel.len() + 64 };
            if !self.claim(cost) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            channels.entry(channel.to_owned()).or_default().insert(version.to_owned(), Default::default());
        }
        if let Some(versions) = channels.get(channel).and_then(|c| c.get(version)) {
            self.insert(&versions[state.index()], register, minute, rank);
        }
    }

    fn insert(&self, cell: &Cell, register: usize, minute: u32, rank: u8) {
        if cell.recent.covers(register, minute, rank) {
            return;
        }
        let mut series = cell.lock();
        let before = series.capacity_bytes();
        let mut claimed = 0;
        let inserted = series.insert(register, minute, rank, |bytes| {
            let granted = self.claim(bytes);
            if granted {
                claimed += bytes;
            }
            granted
        });
        if inserted {
            if cell.recent.ranks.get().is_none() && series.len() >= BUSY_PAIRS && self.claim(M) {
                cell.recent.ranks.get_or_init(|| (0..M).map(|_| AtomicU8::new(0)).collect());
            }
            cell.recent.note(register, minute, rank);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        // The allocator may give more than asked (or fail after the claim): settle.
        let grown = series.capacity_bytes() as isize - before as isize;
        if grown != claimed as isize {
            self.settle(grown - claimed as isize);
        }
    }

    /// Takes `bytes` from the budget, or refuses.
    fn claim(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Drops what is older than the longest window (7 d) before `at` and series left
    /// empty, and gives back unused capacity.
    pub fn expire(&self, at: SystemTime) {
        let horizon = minute(at).saturating_sub(HORIZON_MINUTES);
        let mut empty = false;
        {
            let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
            for versions in channels.values().flat_map(HashMap::values) {
                let mut all_empty = true;
                for cell in versions {
                    let mut series = cell.lock();
                    cell.recent.forget(horizon);
                    self.settle(series.expire(horizon));
                    all_empty &= series.is_empty();
                }
                empty |= all_empty;
            }
        }
        if empty {
            let mut channels = self.channels.write().unwrap_or_else(PoisonError::into_inner);
            let mut freed = 0;
            channels.retain(|channel, versions| {
                versions.retain(|version, cells| {
                    let series: Vec<_> = cells.iter().map(Cell::lock).collect();
                    let keep = series.iter().any(|s| !s.is_empty());
                    if !keep {
                        let held: usize = cells.iter().zip(&series).map(|(c, s)| c.bytes(s)).sum();
                        freed += VERSION_OVERHEAD + version.len() + held;
                    }
                    keep
                });
                if versions.is_empty() {
                    freed += channel.len() + 64;
                }
                !versions.is_empty()
            });
            self.settle(-(freed as isize));
        }
    }

    fn settle(&self, delta: isize) {
        if delta >= 0 {
            self.used.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// This replica's sketches at `at`, after dropping what is older than 7 d.
    pub fn report(&self, at: SystemTime) -> Report {
        self.expire(at);
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        let mut series = Vec::new();
        for (channel, versions) in channels.iter() {
            for (version, states) in versions {
                for state in State::ALL {
                    let pairs = states[state.index()].lock().pairs();
                    if !pairs.is_empty() {
                        series.push(ReportSeries { channel: channel.clone(), version: version.clone(), state, pairs });
                    }
                }
            }
        }
        series.sort_by(|a, b| (&a.channel, &a.version, a.state).cmp(&(&b.channel, &b.version, b.state)));
        Report { precision: PRECISION, minute: minute(at), series }
    }

    /// Bytes held (pair lists by capacity, fixed parts, names), within the budget.
    pub fn bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Series (channel × version × state) holding at least one pair.
    pub fn series(&self) -> usize {
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        channels.values().flat_map(HashMap::values).flatten().filter(|c| !c.lock().is_empty()).count()
    }

    /// Pairs refused since start because the budget was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One replica's sketches, the JSON body of the gateway's `GET /census`. No device id
/// is in it: each series is a list of packed pairs `register << 38 | minute << 6 | rank`
/// (register < 2^14, minute since the Unix epoch, rank 1 to 51), sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Register index bits (14).
    pub precision: u8,
    /// When the report was made, in minutes since the Unix epoch.
    pub minute: u32,
    pub series: Vec<ReportSeries>,
}

/// One series of a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSeries {
    pub channel: String,
    pub version: String,
    pub state: State,
    pub pairs: Vec<u64>,
}

/// The union of replicas' reports, which every figure is read from.
#[derive(Default, Debug)]
pub struct Merged {
    /// channel → version → state → normalised sorted pairs.
    channels: BTreeMap<String, BTreeMap<String, BTreeMap<State, Vec<u64>>>>,
}

impl Merged {
    /// Adds a replica's report; a report that is not a well-formed sketch (another
    /// precision, a register or rank out of range, too many pairs or series, overlong
    /// names) is refused whole.
    pub fn add(&mut self, report: &Report) -> Result<(), CensusError> {
        validate(report)?;
        for s in &report.series {
            let pairs = self
                .channels
                .entry(s.channel.clone())
                .or_default()
                .entry(s.version.clone())
                .or_default()
                .entry(s.state)
                .or_default();
            pairs.extend_from_slice(&s.pairs);
            normalise(pairs);
        }
        Ok(())
    }

    /// Unique devices of `channel` in `state` of `version` in the `window` before `now`.
    pub fn devices(&self, channel: &str, version: &str, state: State, window: Duration, now: SystemTime) -> u64 {
        let pairs = self.channels.get(channel).and_then(|c| c.get(version)).and_then(|v| v.get(&state));
        estimate_union(pairs.into_iter().map(Vec::as_slice), cutoff(window, now))
    }

    /// Unique devices of `channel`, any version and state, in the window.
    pub fn total(&self, channel: &str, window: Duration, now: SystemTime) -> u64 {
        let all = self.channels.get(channel).into_iter().flat_map(BTreeMap::values).flat_map(BTreeMap::values);
        estimate_union(all.map(Vec::as_slice), cutoff(window, now))
    }

    /// Unique devices in the union of several series of `channel` (e.g. downloaded 1.1.0
    /// ∪ running 1.1.0), in the window: with [`Merged::devices`] it gives an
    /// intersection, |A ∩ B| = |A| + |B| − |A ∪ B|, near exact while the counts are small
    /// next to m = 16,384 (where rollout steps live).
    pub fn union(&self, channel: &str, series: &[(&str, State)], window: Duration, now: SystemTime) -> u64 {
        let versions = self.channels.get(channel);
        let chosen = series.iter().filter_map(|(version, state)| versions?.get(*version)?.get(state));
        estimate_union(chosen.map(Vec::as_slice), cutoff(window, now))
    }

    /// Versions `channel` has figures for.
    pub fn versions(&self, channel: &str) -> Vec<String> {
        self.channels.get(channel).map(|c| c.keys().cloned().collect()).unwrap_or_default()
    }

    /// Channels with figures.
    pub fn channels(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }
}

fn validate(report: &Report) -> Result<(), CensusError> {
    if report.precision != PRECISION {
        return Err(CensusError::Precision { found: report.precision });
    }
    if report.series.len() > MAX_SERIES {
        return Err(CensusError::TooManySeries { count: report.series.len() });
    }
    for s in &report.series {
        for name in [&s.channel, &s.version] {
            if name.len() > MAX_NAME {
                return Err(CensusError::NameTooLong { len: name.len() });
            }
        }
        if s.pairs.len() > MAX_PAIRS {
            return Err(CensusError::TooManyPairs { count: s.pairs.len() });
        }
        for &pair in &s.pairs {
            if register_of(pair) >= M as u64 {
                return Err(CensusError::Register { register: register_of(pair) });
            }
            let rank = rank_of(pair);
            if rank == 0 || rank > MAX_RANK {
                return Err(CensusError::Rank { rank });
            }
        }
    }
    Ok(())
}

/// Sorts and keeps, in each register, only the pairs no later pair covers (the list of
/// future possible maxima).
fn normalise(pairs: &mut Vec<u64>) {
    pairs.sort_unstable();
    pairs.dedup();
    let mut keep = vec![false; pairs.len()];
    let mut i = pairs.len();
    while i > 0 {
        let register = register_of(pairs[i - 1]);
        let mut highest = 0;
        while i > 0 && register_of(pairs[i - 1]) == register {
            i -= 1;
            let rank = rank_of(pairs[i]);
            if rank > highest {
                keep[i] = true;
                highest = rank;
            }
        }
    }
    let mut flags = keep.into_iter();
    pairs.retain(|_| flags.next().unwrap_or(false));
}

/// The estimate of the union of `series` over pairs newer than `cutoff`.
fn estimate_union<'a>(series: impl Iterator<Item = &'a [u64]>, cutoff: u32) -> u64 {
    let mut registers = vec![0u8; M];
    for pairs in series {
        for &pair in pairs {
            if minute_of(pair) > cutoff {
                let r = &mut registers[register_of(pair) as usize];
                *r = (*r).max(rank_of(pair));
            }
        }
    }
    estimate(&registers).round() as u64
}

/// Ertl's improved raw estimator (2017, algorithm 6) over the registers.
fn estimate(registers: &[u8]) -> f64 {
    let mut histogram = [0u32; MAX_RANK as usize + 1];
    for &r in registers {
        histogram[usize::from(r.min(MAX_RANK))] += 1;
    }
    let m = registers.len() as f64;
    let q = Q as usize;
    let mut z = m * tau(1.0 - f64::from(histogram[q + 1]) / m);
    for k in (1..=q).rev() {
        z = 0.5 * (z + f64::from(histogram[k]));
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    let alpha = 1.0 / (2.0 * std::f64::consts::LN_2);
    alpha * m * m / z
}

/// σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k−1); infinite at 1 (no register set: estimate 0).
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))² 2^−k) / 3.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn t0() -> SystemTime {
        // 2026-12-01T00:00:00Z, on a minute.
        UNIX_EPOCH + Duration::from_secs(1_796_083_200)
    }

    fn id(i: u64) -> String {
        format!("device-{i}")
    }

    fn merged(reports: &[Report]) -> Merged {
        let mut merged = Merged::default();
        for report in reports {
            merged.add(report).unwrap();
        }
        merged
    }

    /// The galloping search answers what a binary search over the whole block does,
    /// from any guess: empty and one-pair blocks, runs of equal pairs, keys below, between
    /// and above every pair, guesses at both ends and past the end.
    #[test]
    fn search_from_a_guess_agrees_with_a_binary_search() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u32| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % u64::from(bound)) as u32
        };
        for len in [0_usize, 1, 2, 3, 7, 64, 1000] {
            for _ in 0..200 {
                let mut block: Vec<u32> = (0..len).map(|_| next(50)).collect();
                block.sort_unstable();
                for key in 0..=51 {
                    let expected = block.partition_point(|&e| e < key);
                    for guess in [0, len / 2, len.saturating_sub(1), len, len + 5, next(len as u32 + 1) as usize] {
                        assert_eq!(lower_bound_near(&block, key, guess), expected, "{block:?} key {key} guess {guess}");
                    }
                }
            }
        }
    }

    fn relative_error(estimate: u64, truth: u64) -> f64 {
        if truth == 0 {
            return if estimate == 0 { 0.0 } else { f64::INFINITY };
        }
        (estimate as f64 - truth as f64) / truth as f64
    }

    /// The accuracy table: a fixed set of ids (`device-0`, `device-1`, …), so the
    /// figures are the same on every run; within ±2 % from 1,000 ids up (±1 below).
    #[test]
    fn accuracy_from_zero_to_a_million() {
        let census = Census::new(usize::MAX);
        let checkpoints = [0u64, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];
        let mut seen = 0;
        let mut rows = Vec::new();
        for n in checkpoints {
            while seen < n {
                census.record("c", "1.0.0", State::Running, &id(seen), t0());
                seen += 1;
            }
            let estimate = merged(&[census.report(t0())]).devices("c", "1.0.0", State::Running, HOUR, t0());
            rows.push((n, estimate, relative_error(estimate, n)));
        }
        println!("{:>9} {:>9} {:>8}", "ids", "estimate", "error");
        for (n, estimate, error) in &rows {
            println!("{n:>9} {estimate:>9} {:>7.3}%", error * 100.0);
        }
        for (n, estimate, error) in rows {
            if n <= 100 {
                assert!(estimate.abs_diff(n) <= 1, "{n}: {estimate}");
            } else {
                assert!(error.abs() <= 0.02, "{n}: {estimate} ({:.3} %)", error * 100.0);
            }
        }
    }

    #[test]
    fn the_estimator_reads_empty_and_full_sketches() {
        assert_eq!(estimate(&vec![0u8; M]).round(), 0.0);
        let mut one = vec![0u8; M];
        one[7] = 3;
        assert_eq!(estimate(&one).round(), 1.0);
        // Every register at the largest rank: beyond any count (infinite, saturating).
        assert_eq!(estimate(&vec![MAX_RANK; M]).round() as u64, u64::MAX);
        let mut nearly = vec![MAX_RANK; M];
        nearly[0] = 1;
        let huge = estimate(&nearly);
        assert!(huge.is_finite() && huge > 1e8, "{huge}");
    }

    /// Three replicas seeing overlapping sets of devices, at times spread over a week,
    /// merge to exactly the sketch one replica seeing everything holds, so every figure
    /// is the same.
    #[test]
    fn three_replicas_merge_to_what_one_would_hold() {
        let replicas = [Census::new(usize::MAX), Census::new(usize::MAX), Census::new(usize::MAX)];
        let single = Census::new(usize::MAX);
        let states = State::ALL;
        for i in 0..30_000u64 {
            // Replica 0 sees 0..15k, replica 1 10k..25k, replica 2 20k..30k and every
            // tenth device again; some devices poll several replicas at other times.
            let at = t0() + Duration::from_secs(i * 17 % (6 * 24 * 3600));
            let later = at + Duration::from_secs(3600 * (i % 30));
            let version = ["1.0.0", "1.1.0"][(i % 2) as usize];
            let state = states[(i % 3) as usize];
            let mut seen_by = Vec::new();
            if i < 15_000 {
                seen_by.push((0, at));
            }
            if (10_000..25_000).contains(&i) {
                seen_by.push((1, later));
            }
            if i >= 20_000 || i % 10 == 0 {
                seen_by.push((2, at));
            }
            for (replica, when) in seen_by {
                replicas[replica].record("c", version, state, &id(i), when);
                single.record("c", version, state, &id(i), when);
            }
        }
        let now = t0() + 6 * DAY + 2 * HOUR;
        let reports: Vec<Report> = replicas.iter().map(|r| r.report(now)).collect();
        // In any order.
        let merged_abc = merged(&reports);
        let merged_cba = merged(&[reports[2].clone(), reports[1].clone(), reports[0].clone()]);
        let one = merged(&[single.report(now)]);
        assert_eq!(merged_abc.channels, one.channels);
        assert_eq!(merged_cba.channels, one.channels);
        for (_, window) in WINDOWS {
            for version in ["1.0.0", "1.1.0"] {
                for state in states {
                    let figure = one.devices("c", version, state, window, now);
                    assert_eq!(merged_abc.devices("c", version, state, window, now), figure);
                }
            }
            assert_eq!(merged_abc.total("c", window, now), one.total("c", window, now));
        }
        // The merge of overlapping sets counts each device once.
        let total = merged_abc.total("c", WINDOWS[2].1, now);
        assert!(relative_error(total, 30_000).abs() < 0.02, "{total}");
        // Merging a report twice changes nothing.
        let mut twice = merged(&reports);
        twice.add(&reports[1]).unwrap();
        assert_eq!(twice.channels, one.channels);
    }

    /// Each window counts the devices seen in it, by an explicit clock; what is older
    /// than 7 d is dropped and its memory given back.
    #[test]
    fn windows_follow_the_clock_and_a_week_expires() {
        let census = Census::new(usize::MAX);
        let record = |range: std::ops::Range<u64>, at: SystemTime| {
            for i in range {
                census.record("c", "2.0.0", State::Offered, &id(i), at);
            }
        };
        let figures = |now: SystemTime| -> Vec<u64> {
            let merged = merged(&[census.report(now)]);
            WINDOWS.iter().map(|(_, w)| merged.devices("c", "2.0.0", State::Offered, *w, now)).collect()
        };
        // Estimates: exact here but for a collision or two.
        let near = |figures: Vec<u64>, expected: [u64; 3]| {
            assert!(figures.iter().zip(expected).all(|(f, e)| f.abs_diff(e) <= 2), "{figures:?} != {expected:?}");
        };
        record(0..100, t0());
        record(100..300, t0() + 2 * HOUR);
        near(figures(t0() + 2 * HOUR), [200, 300, 300]);
        near(figures(t0() + 2 * HOUR + 59 * 60 * Duration::from_secs(1)), [200, 300, 300]);
        near(figures(t0() + 3 * HOUR), [0, 300, 300]);
        record(300..350, t0() + 2 * DAY);
        near(figures(t0() + 2 * DAY), [50, 50, 350]);
        near(figures(t0() + 2 * DAY + 2 * HOUR), [0, 50, 350]);
        // A device seen in the first hour and again later counts in the later window.
        record(0..10, t0() + 2 * DAY + 2 * HOUR);
        near(figures(t0() + 2 * DAY + 2 * HOUR), [10, 60, 350]);
        let before = census.bytes();
        assert!(before > 0);
        // 7 d after the first records: those not seen since are gone (60 left).
        near(figures(t0() + 7 * DAY + 3 * HOUR), [0, 0, 60]);
        assert!(census.bytes() < before, "{} !< {before}", census.bytes());
        // A week after the last record nothing is left, not even the series.
        let report = census.report(t0() + 9 * DAY + 3 * HOUR);
        assert!(report.series.is_empty());
        assert_eq!(census.bytes(), 0);
        assert_eq!(census.series(), 0);
    }

    /// A device polling again replaces its own pair: a week of polls every 10 minutes
    /// holds one pair, and memory does not move after the first.
    #[test]
    fn a_device_polling_again_replaces_its_pair() {
        let census = Census::new(usize::MAX);
        census.record("c", "1.0.0", State::Running, "dev-a", t0());
        let bytes = census.bytes();
        for k in 1..1008 {
            census.record("c", "1.0.0", State::Running, "dev-a", t0() + Duration::from_secs(600 * k));
        }
        assert_eq!(census.bytes(), bytes);
        let now = t0() + 7 * DAY;
        let report = census.report(now);
        assert_eq!(report.series.len(), 1);
        assert_eq!(report.series[0].pairs.len(), 1);
        assert_eq!(minute_of(report.series[0].pairs[0]), minute(t0() + Duration::from_secs(600 * 1007)));
    }

    /// The lists stay the exact list of future possible maxima whatever the order of
    /// insertion (a clock that steps back, a merge): compared with `normalise`.
    #[test]
    fn out_of_order_insertions_keep_the_exact_lists() {
        let census = Census::new(usize::MAX);
        let mut all = Vec::new();
        for i in 0..50_000u64 {
            // Minutes jump back and forth over a day, many ids per register.
            let minute_offset = (i * 7919) % 1440;
            let at = t0() + Duration::from_secs(60 * minute_offset);
            let hash = DeviceHash::of(&id(i % 20_000));
            let (register, rank) = hash.split();
            all.push(pack(register, minute(at), rank));
            census.record_hash("c", "v", State::Downloaded, hash, at);
        }
        normalise(&mut all);
        let report = census.report(t0() + HOUR);
        assert_eq!(report.series[0].pairs, all);
    }

    /// The gateway's pattern: a busy series (so it gets its [`Recent`] ranks) sees every
    /// device many times a minute, minutes advance, and a few records arrive a minute
    /// late (another thread's clock read). Skipping what the ranks cover keeps the exact
    /// lists, and the ranks' 16 KiB count in the budget until the series expires.
    #[test]
    fn skipping_what_this_minute_covers_keeps_the_exact_lists() {
        let census = Census::new(usize::MAX);
        let mut all = Vec::new();
        for i in 0..300_000u64 {
            let mut minute_offset = i / 20_000;
            if i % 20_000 < 50 && minute_offset > 0 {
                minute_offset -= 1;
            }
            let at = t0() + Duration::from_secs(60 * minute_offset);
            let hash = DeviceHash::of(&id((i * 7919) % 100_000));
            let (register, rank) = hash.split();
            all.push(pack(register, minute(at), rank));
            census.record_hash("c", "v", State::Offered, hash, at);
        }
        normalise(&mut all);
        let channels = census.channels.read().unwrap();
        let cell = &channels["c"]["v"][State::Offered.index()];
        assert_eq!(cell.recent.bytes(), M, "a busy series gets its ranks");
        assert!(census.bytes() >= cell.lock().capacity_bytes() + M);
        drop(channels);
        let report = census.report(t0() + HOUR);
        assert_eq!(report.series[0].pairs, all);
        census.expire(t0() + 8 * DAY);
        assert_eq!(census.bytes(), 0, "the ranks are given back with the series");
    }

    /// Minutes are kept as 16-bit offsets from a base: a record 50 days later moves the
    /// base (dropping what is a week older), one a little earlier moves it back, one
    /// too far back (past every window) is left out.
    #[test]
    fn the_minute_base_moves_with_the_records() {
        let census = Census::new(usize::MAX);
        census.record("c", "v", State::Running, "old", t0());
        let later = t0() + 50 * DAY;
        census.record("c", "v", State::Running, "new", later);
        let pairs = |now| census.report(now).series.into_iter().flat_map(|s| s.pairs).collect::<Vec<_>>();
        let minutes = |now| pairs(now).into_iter().map(minute_of).collect::<Vec<_>>();
        assert_eq!(minutes(later), [minute(later)], "the 50-day-old pair went with the move");
        let back = later - 8 * DAY;
        census.record("c", "v", State::Running, "back", back);
        let mut expected = vec![minute(back), minute(later)];
        let mut got = minutes(back + HOUR);
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
        let bytes = census.bytes();
        census.record("c", "v", State::Running, "far", later - 60 * DAY);
        assert_eq!(pairs(back + HOUR).len(), 2);
        assert_eq!((census.bytes(), census.refused()), (bytes, 0));
        let merged = merged(&[census.report(later)]);
        assert_eq!(merged.devices("c", "v", State::Running, HOUR, later), 1);
    }

    /// Past the budget new pairs are refused and counted, updates in place go on, and
    /// expiry frees memory for new pairs.
    #[test]
    fn the_budget_refuses_growth_and_expiry_frees_it() {
        let limit = 64 * 1024;
        let census = Census::new(limit);
        for i in 0..100_000 {
            census.record("c", "1.0.0", State::Offered, &id(i), t0() + Duration::from_secs(60 * (i % 600)));
        }
        assert!(census.bytes() <= limit, "{}", census.bytes());
        let refused = census.refused();
        assert!(refused > 0);
        // A device whose pair is held polls again later: replaced in place, not refused.
        let report = census.report(t0() + 10 * HOUR);
        let held = (0..100_000u64)
            .find(|&i| {
                let (register, rank) = DeviceHash::of(&id(i)).split();
                let at = minute(t0() + Duration::from_secs(60 * (i % 600)));
                report.series[0].pairs.contains(&pack(register, at, rank))
            })
            .unwrap();
        census.record("c", "1.0.0", State::Offered, &id(held), t0() + 11 * HOUR);
        assert_eq!(census.refused(), refused);
        // A week later everything expired: room again.
        census.expire(t0() + 8 * DAY);
        assert_eq!(census.bytes(), 0);
        census.record("c", "1.0.0", State::Offered, &id(1), t0() + 8 * DAY);
        assert_eq!(census.refused(), refused);
        assert_eq!(census.series(), 1);
    }

    /// "Downloaded the new version and report running it": 300 downloaded, 270 of them
    /// running, 500 others running; |A ∩ B| = |A| + |B| − |A ∪ B|.
    #[test]
    fn intersection_of_downloaded_and_running() {
        let census = Census::new(usize::MAX);
        for i in 0..300 {
            census.record("c", "1.1.0", State::Downloaded, &id(i), t0());
        }
        for i in (0..270).chain(1_000..1_500) {
            census.record("c", "1.1.0", State::Running, &id(i), t0() + HOUR);
        }
        let now = t0() + 2 * HOUR;
        let merged = merged(&[census.report(now)]);
        let window = DAY;
        let a = merged.devices("c", "1.1.0", State::Downloaded, window, now);
        let b = merged.devices("c", "1.1.0", State::Running, window, now);
        let union = merged.union("c", &[("1.1.0", State::Downloaded), ("1.1.0", State::Running)], window, now);
        let both = (a + b).saturating_sub(union);
        println!("downloaded {a}, running {b}, union {union}, both {both} (true 300, 770, 800, 270)");
        assert!(a.abs_diff(300) <= 3 && b.abs_diff(770) <= 5 && union.abs_diff(800) <= 5, "{a} {b} {union}");
        assert!(both.abs_diff(270) <= 5, "{both}");
        // Series that do not exist add nothing.
        assert_eq!(merged.union("c", &[("9.9.9", State::Running), ("1.1.0", State::Downloaded)], window, now), a);
        assert_eq!(merged.union("nope", &[("1.1.0", State::Running)], window, now), 0);
        assert_eq!(merged.versions("c"), ["1.1.0"]);
        assert_eq!(merged.channels(), ["c"]);
    }

    /// Garbled or hostile reports are refused whole with a typed error, never a panic,
    /// and change nothing.
    #[test]
    fn hostile_reports_are_refused() {
        let census = Census::new(usize::MAX);
        census.record("c", "1.0.0", State::Running, "dev-a", t0());
        let good = census.report(t0());
        let mut merged = merged(std::slice::from_ref(&good));
        let before = merged.channels.clone();
        let with = |pairs: Vec<u64>| {
            let mut report = good.clone();
            report.series.push(ReportSeries { channel: "c".into(), version: "2".into(), state: State::Offered, pairs });
            report
        };
        let cases = [
            (Report { precision: 12, ..good.clone() }, CensusError::Precision { found: 12 }),
            (with(vec![1 << 52 | 1]), CensusError::Register { register: 1 << 14 }),
            (with(vec![u64::MAX]), CensusError::Register { register: u64::MAX >> 38 }),
            (with(vec![pack(3, 100, 0)]), CensusError::Rank { rank: 0 }),
            (with(vec![pack(3, 100, 52)]), CensusError::Rank { rank: 52 }),
            (with(vec![pack(3, 100, 1); MAX_PAIRS + 1]), CensusError::TooManyPairs { count: MAX_PAIRS + 1 }),
            (
                Report {
                    series: vec![
                        ReportSeries {
                            channel: "c".into(),
                            version: "1".into(),
                            state: State::Offered,
                            pairs: Vec::new()
                        };
                        MAX_SERIES + 1
                    ],
                    ..good.clone()
                },
                CensusError::TooManySeries { count: MAX_SERIES + 1 },
            ),
            (
                Report {
                    series: vec![ReportSeries {
                        channel: "c".repeat(300),
                        version: "1".into(),
                        state: State::Offered,
                        pairs: vec![pack(1, 1, 1)],
                    }],
                    ..good.clone()
                },
                CensusError::NameTooLong { len: 300 },
            ),
        ];
        for (report, error) in cases {
            assert_eq!(merged.add(&report), Err(error));
            assert_eq!(merged.channels, before);
        }
        // Not even JSON of the right shape: serde refuses it (negative pair, unknown state).
        for body in [
            r#"{"precision":14,"minute":1,"series":[{"channel":"c","version":"1","state":"running","pairs":[-1]}]}"#,
            r#"{"precision":14,"minute":1,"series":[{"channel":"c","version":"1","state":"flying","pairs":[]}]}"#,
            r#"{"precision":300,"minute":1,"series":[]}"#,
        ] {
            assert!(serde_json::from_str::<Report>(body).is_err(), "{body}");
        }
    }

    /// A report holds registers, never an id nor its hash.
    #[test]
    fn a_report_holds_no_device_id() {
        let census = Census::new(usize::MAX);
        let device = "serial-0042-secret";
        census.record("c", "1.0.0", State::Running, device, t0());
        let json = serde_json::to_string(&census.report(t0())).unwrap();
        let hash = DeviceHash::of(device).0;
        assert!(!json.contains(device), "{json}");
        assert!(!json.contains(&hash.to_string()) && !json.contains(&format!("{hash:x}")), "{json}");
        assert!(json.contains(r#""state":"running""#), "{json}");
    }

    /// Memory figures, printed: 100 channels × 5 versions × 3 states with N devices a
    /// channel (each device offered one version, downloaded one, running one, at times
    /// over a day), and one series of 1 M ids over a day.
    #[test]
    fn memory_figures() {
        const MIB: f64 = 1024.0 * 1024.0;
        for n in [1_000u64, 10_000] {
            // Within the default budget: nothing refused.
            let census = Census::new(16 << 20);
            for channel in 0..100u64 {
                let name = format!("channel-{channel}");
                for i in 0..n {
                    let device = DeviceHash::of(&id(channel * n + i));
                    let at = t0() + Duration::from_secs(60 * (i % 1440));
                    let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"];
                    // Offered and downloaded the newest, running one of five.
                    census.record_hash(&name, versions[4], State::Offered, device, at);
                    census.record_hash(&name, versions[4], State::Downloaded, device, at);
                    census.record_hash(&name, versions[(i % 5) as usize], State::Running, device, at);
                }
            }
            census.expire(t0() + DAY);
            let bytes = census.bytes();
            println!(
                "100 channels x 5 versions x 3 states, {n} devices a channel: {} series, {bytes} bytes ({:.2} MiB), {} refused",
                census.series(),
                bytes as f64 / MIB,
                census.refused()
            );
            assert_eq!(census.refused(), 0);
            // 3 pairs at most per device and state, 4 bytes each, plus the fixed parts.
            assert!(bytes <= (3 * 100 * n as usize) * 4 * 5 / 4 + 700 * (VERSION_OVERHEAD + 100));
        }
        let census = Census::new(usize::MAX);
        for i in 0..1_000_000u64 {
            census.record("c", "1.0.0", State::Running, &id(i), t0() + Duration::from_secs(60 * (i % 1440)));
        }
        census.expire(t0() + DAY);
        let bytes = census.bytes();
        let pairs = census.report(t0() + DAY).series[0].pairs.len();
        println!(
            "one series of 1,000,000 ids over a day: {pairs} pairs, {bytes} bytes ({:.2} MiB)",
            bytes as f64 / MIB
        );
        assert!(bytes <= MAX_PAIRS * 4 + VERSION_OVERHEAD + 100);
    }
}
