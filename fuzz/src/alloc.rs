//! Measuring how much memory a decoder takes for one input.
//!
//! A decoder that trusts a length prefix can be made to reserve gigabytes by a few bytes. A
//! target binary installs [`Counting`] as its global allocator; [`peak_during`] then reports the
//! most bytes that were live at once on the calling thread while a closure ran, so a target
//! can assert that memory stays proportional to the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting this thread's live bytes. Install it with
/// `#[global_allocator] static A: Counting = Counting;` in a target binary.
pub struct Counting;

fn grow(n: usize) {
    // `try_with`: the thread's counters may already be gone while it exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(n as isize);
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(n as isize)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes, and thread-local `Cell`s with const initialisers never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

/// Run `f` and return its result with the largest number of bytes that were live at once on
/// this thread during the call, beyond what was live before it. Meaningful only in a binary
/// that installed [`Counting`]; elsewhere it reports 0.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    let outer_peak = PEAK.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    PEAK.with(|p| p.set(outer_peak.max(peak)));
    (out, peak.saturating_sub(start).max(0) as usize)
}

/// The memory a decoder may take for an input of `len` bytes: a fixed allowance for the
/// bounded pre-allocation serde grants a claimed sequence length (at most 1 MiB per open
/// sequence), plus a generous multiple of the input.
pub fn decode_budget(len: usize) -> usize {
    8 * 1024 * 1024 + 64 * len
}
