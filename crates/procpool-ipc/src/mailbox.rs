//! A few shared 64-bit words beside the rings, for signals that must not queue behind frames.
//!
//! The rings deliver frames in order, so a message can only be seen after every frame in
//! front of it. Some signals cannot wait that long: a worker that is busy with one chunk
//! does not read its ring, yet the parent must be able to ask it to give back the rest of
//! the chunk, and the parent must know which item was running if the worker dies.
//! The mailbox is a fixed array of [`MAILBOX_WORDS`] atomic words in the region header
//! page that either side may load or store at any time.
//! ipc gives the words no meaning; the layers above assign them (see procpool-worker).

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::segment::Region;
use crate::sync::{AtomicU64, Ordering};
use crate::wire::MAILBOX_OFFSET;

/// Number of words in a channel's [`Mailbox`].
pub const MAILBOX_WORDS: usize = crate::wire::MAILBOX_WORDS;

/// The shared words of one channel. `Clone + Send + Sync`; every clone sees the same words.
///
/// Loads are Acquire and stores Release: a store publishes everything its writer did
/// before it (for example the outcomes written for earlier items) to a reader that
/// loads the stored value. The words carry no other synchronisation.
///
/// # Panics
///
/// Every accessor panics if `idx >= MAILBOX_WORDS`; indices are constants chosen by the
/// caller, so an out-of-range one is a bug in the caller, never input from the peer.
#[derive(Clone)]
pub struct Mailbox {
    /// First of `MAILBOX_WORDS` atomic words inside `region`'s header page.
    /// Invariant: valid, 8-byte aligned and mapped as long as `region` lives.
    words: NonNull<AtomicU64>,
    /// Keeps the mapping alive.
    _region: Arc<Region>,
}

// SAFETY: the words are atomics (sharing them between threads is their purpose) and the
// mapping they live in is kept alive by the `Arc<Region>` this value holds.
unsafe impl Send for Mailbox {}
// SAFETY: as for `Send`: all access goes through `&AtomicU64`.
unsafe impl Sync for Mailbox {}

impl Mailbox {
    /// The mailbox of `region`.
    pub(crate) fn new(region: Arc<Region>) -> Mailbox {
        const { assert!(MAILBOX_OFFSET % 64 == 0) };
        const { assert!(MAILBOX_OFFSET + MAILBOX_WORDS * 8 <= crate::wire::REGION_HEADER_SIZE) };
        assert!(region.len() >= MAILBOX_OFFSET + MAILBOX_WORDS * 8);
        // SAFETY: the region is at least MAILBOX_OFFSET + 64 bytes (asserted above) and
        // its base is page aligned, so the words are in bounds and 8-byte aligned.
        let words = unsafe { NonNull::new_unchecked(region.base().add(MAILBOX_OFFSET)) };
        Mailbox {
            words: words.cast(),
            _region: region,
        }
    }

    #[inline]
    fn word(&self, idx: usize) -> &AtomicU64 {
        assert!(idx < MAILBOX_WORDS, "mailbox word {idx} out of range");
        // SAFETY: `idx` is in range (asserted), the words are valid while `self.region`
        // lives (field invariant), and any bit pattern is a valid AtomicU64. The peer
        // writes these words only through atomics too, so a shared reference is sound.
        unsafe { self.words.add(idx).as_ref() }
    }

    /// Word `idx` itself, for a loop that reads or writes it once per item (resolved once,
    /// not per access). The caller picks the orderings; [`Self::load`] and [`Self::store`]
    /// use Acquire and Release.
    ///
    /// # Panics
    ///
    /// If `idx >= MAILBOX_WORDS`.
    #[inline]
    pub fn atomic(&self, idx: usize) -> &AtomicU64 {
        self.word(idx)
    }

    /// Loads word `idx`.
    #[inline]
    pub fn load(&self, idx: usize) -> u64 {
        // Acquire: pairs with the Release in `store`/`compare_exchange` of the writer.
        self.word(idx).load(Ordering::Acquire)
    }

    /// Stores `value` into word `idx`.
    #[inline]
    pub fn store(&self, idx: usize, value: u64) {
        // Release: pairs with the Acquire in `load` of the reader.
        self.word(idx).store(value, Ordering::Release);
    }

    /// Stores `new` into word `idx` if it holds `current`; returns the previous value
    /// as `Ok` on success and `Err` on failure, like [`AtomicU64::compare_exchange`].
    pub fn compare_exchange(&self, idx: usize, current: u64, new: u64) -> Result<u64, u64> {
        // AcqRel on success: it both reads the peer's last store and publishes ours.
        // Acquire on failure: the value returned is read like a `load`.
        self.word(idx)
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Blocks while word `idx` holds `current`, for at most `timeout`; returns early when
    /// another thread or process calls [`wake`](Mailbox::wake) on the word. Spurious returns
    /// are possible (the word's low 32 bits are the futex key), so callers re-check the word
    /// in a loop.
    ///
    /// Pairs with a writer that stores a new value and then calls `wake`: a store made
    /// before the wait starts makes it return at once, a store made during it is followed
    /// by the wake, so no change is missed.
    pub fn wait(&self, idx: usize, current: u64, timeout: std::time::Duration) {
        crate::doorbell::futex_wait_u64(self.word(idx), current, timeout);
    }

    /// Wakes every thread (in any process) blocked in [`wait`](Mailbox::wait) on word `idx`.
    pub fn wake(&self, idx: usize) {
        crate::doorbell::futex_wake_u64(self.word(idx));
    }

    /// Swaps `value` into word `idx` and returns the previous value.
    pub fn swap(&self, idx: usize, value: u64) -> u64 {
        // AcqRel: as for `compare_exchange`.
        self.word(idx).swap(value, Ordering::AcqRel)
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<u64> = (0..MAILBOX_WORDS).map(|idx| self.load(idx)).collect();
        f.debug_struct("Mailbox").field("words", &words).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelConfig, Endpoint};

    #[test]
    fn both_ends_see_the_same_words() {
        let (parent, handoff) = Endpoint::create(&ChannelConfig::new()).unwrap();
        let child = Endpoint::open(handoff).unwrap();
        let (mine, theirs) = (parent.mailbox(), child.mailbox());
        for idx in 0..MAILBOX_WORDS {
            assert_eq!(theirs.load(idx), 0, "a fresh mailbox is zeroed");
        }
        mine.store(2, 41);
        assert_eq!(theirs.load(2), 41);
        assert_eq!(theirs.compare_exchange(2, 41, 42), Ok(41));
        assert_eq!(mine.compare_exchange(2, 41, 7), Err(42));
        assert_eq!(mine.swap(0, 9), 0);
        assert_eq!(theirs.clone().load(0), 9);
    }

    #[test]
    fn wait_returns_on_a_store_and_wake_from_the_other_end() {
        let (parent, handoff) = Endpoint::create(&ChannelConfig::new()).unwrap();
        let child = Endpoint::open(handoff).unwrap();
        let (mine, theirs) = (parent.mailbox(), child.mailbox());
        // A value that differs from the word returns at once.
        mine.store(3, 5);
        theirs.wait(3, 4, std::time::Duration::from_secs(60));
        let waiter = std::thread::spawn(move || {
            while theirs.load(3) == 5 {
                theirs.wait(3, 5, std::time::Duration::from_secs(60));
            }
            theirs.load(3)
        });
        std::thread::sleep(std::time::Duration::from_millis(10));
        mine.store(3, 6);
        mine.wake(3);
        assert_eq!(waiter.join().unwrap(), 6);
    }
}
