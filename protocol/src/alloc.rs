//! The process allocator: the system allocator, except that huge allocations are lazy.
//!
//! The Kafka codec reserves a vector for an array's declared length before reading any
//! element, so a 23-byte frame claiming four billion topics asks for hundreds of
//! gigabytes. The system allocator refuses, and Rust aborts the process on a failed
//! allocation: one bad frame would stop the node. Here an allocation of 1 GiB or more is
//! an anonymous `MAP_NORESERVE` mapping, which the kernel grants without committing
//! memory; decoding then fails on the missing bytes after touching a page or two, and the
//! mapping is returned. Memory actually written is committed as usual.
//!
//! Every binary that decodes Kafka requests installs it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

const LAZY_THRESHOLD: usize = 1 << 30;

/// See the module documentation.
pub struct LazyHugeAlloc;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= 4096
}

unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // SAFETY: an anonymous private mapping with no address hint; checked for failure.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            return if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p as *mut u8 };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Anonymous mappings are zero-filled.
            // SAFETY: as `alloc`.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `ptr` came from the mmap in `alloc` with this size.
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: both sides belong to the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block of the new size, a copy of the common prefix, then the old
        // block is returned to whichever allocator owns it.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
#[global_allocator]
static GLOBAL: LazyHugeAlloc = LazyHugeAlloc;

#[cfg(test)]
mod tests {
    #[test]
    fn huge_reservation_succeeds_without_committing() {
        let v: Vec<[u8; 128]> = Vec::with_capacity(1 << 32);
        assert!(v.capacity() >= 1 << 32);
        let mut v = v;
        v.push([7; 128]);
        assert_eq!(v[0][0], 7);
    }
}
