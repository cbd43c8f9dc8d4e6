//! How deep the stack went. cortex-m-rt paints the stack region with `STACK_PAINT_VALUE`
//! before `main` (its `paint-stack` feature); the words the program has used no longer hold
//! it. flip-link puts the stack at the bottom of RAM, below the statics.

/// The stack a program may use; more fails its run.
pub const BUDGET: usize = 8 * 1024;

extern "C" {
    /// The initial stack pointer, from the linker (cortex-m-rt, moved by flip-link).
    static _stack_start: u32;
    /// The lowest address of the stack region.
    static _stack_end: u32;
}

/// The top of the stack.
pub fn top() -> usize {
    core::ptr::addr_of!(_stack_start) as usize
}

/// Bytes of the stack region.
pub fn region() -> usize {
    top() - core::ptr::addr_of!(_stack_end) as usize
}

/// The deepest the stack has been: the top minus the lowest word no longer painted.
pub fn high_water() -> usize {
    let mut p = core::ptr::addr_of!(_stack_end) as usize;
    // SAFETY: reading words of the stack region below the stack pointer.
    while p < top()
        && unsafe { core::ptr::read_volatile(p as *const u32) } == cortex_m_rt::STACK_PAINT_VALUE
    {
        p += 4;
    }
    top() - p
}
