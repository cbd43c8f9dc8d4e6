//! What the firmware embeds at build time, written by `host-sim device-assets`: the
//! pre-trained model and the shifted fine-tuning and evaluation sets (as features).

/// Bytes at an address aligned like `A`.
#[repr(C)]
struct Aligned<A, B: ?Sized> {
    _align: [A; 0],
    bytes: B,
}

/// The checkpoint, 4-byte aligned so that its `f32` parameters are read in place.
static PRETRAINED_ALIGNED: &Aligned<u32, [u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!("../assets/pretrained.sgck"),
};

/// The pre-trained checkpoint (`safegrad::checkpoint` format), 4-byte aligned: the frozen
/// layers read their parameters from it in place.
pub static PRETRAINED: &[u8] = &PRETRAINED_ALIGNED.bytes;
/// The shifted recordings to fine-tune on, as features (`safegrad::dataset` format).
pub static FINETUNE_SET: &[u8] = include_bytes!("../assets/finetune.sgds");
/// The shifted held-out recordings, as features.
pub static EVAL_SET: &[u8] = include_bytes!("../assets/eval.sgds");

#[cfg(test)]
mod tests {
    #[test]
    fn the_checkpoint_is_aligned_for_f32() {
        assert_eq!(
            super::PRETRAINED.as_ptr() as usize % core::mem::align_of::<f32>(),
            0
        );
    }
}
