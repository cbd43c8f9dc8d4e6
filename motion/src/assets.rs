//! What the firmware embeds, written by `host-sim device-assets`: the pre-trained model and
//! the shifted fine-tuning and evaluation sets (as features).

/// The pre-trained checkpoint (`safegrad::checkpoint` format), aligned so that the frozen
/// layers read their parameters from it in place.
pub static PRETRAINED: &[u8] = safegrad::include_checkpoint!("../assets/pretrained.sgck");
/// The pre-trained model quantised (`host-sim finetune --quantize int8`): the float head's
/// parameters and the `int8` body (checkpoint format version 2), aligned for reading in
/// place.
pub static INT8: &[u8] = safegrad::include_checkpoint!("../assets/int8.sgck");
/// The shifted recordings to fine-tune on, as features (`safegrad::dataset` format).
pub static FINETUNE_SET: &[u8] = include_bytes!("../assets/finetune.sgds");
/// The shifted held-out recordings, as features.
pub static EVAL_SET: &[u8] = include_bytes!("../assets/eval.sgds");
/// The held-out recordings as pre-training saw them (unshifted), as features.
pub static ORIGINAL_SET: &[u8] = include_bytes!("../assets/original.sgds");
/// The body's outputs for 3 training recordings of each class, unshifted, in 8 bits
/// (`safegrad::train::replay_buffer` format): the rows a device replays beside the new
/// installation's so that it keeps serving the old one (`host-sim finetune --replay 3`).
pub static REPLAY: &[u8] = include_bytes!("../assets/replay.sgrb");

/// What the CNN's firmware embeds, written by `host-sim device-assets --model cnn`: the
/// pre-trained [`MotionCnn`](crate::model::MotionCnn) and the shifted recordings as raw
/// windows (600 values each, the channels one after the other).
#[cfg(feature = "cnn")]
pub mod cnn {
    /// The pre-trained checkpoint, aligned for reading the frozen layers in place.
    pub static PRETRAINED: &[u8] = safegrad::include_checkpoint!("../assets/cnn/pretrained.sgck");
    /// The pre-trained CNN quantised: the float head and the `int8` body (checkpoint
    /// format version 2), aligned for reading in place.
    pub static INT8: &[u8] = safegrad::include_checkpoint!("../assets/cnn/int8.sgck");
    /// The shifted recordings to fine-tune on, as raw windows (`safegrad::dataset`
    /// format).
    pub static FINETUNE_SET: &[u8] = include_bytes!("../assets/cnn/finetune.sgds");
    /// The shifted held-out recordings, as raw windows.
    pub static EVAL_SET: &[u8] = include_bytes!("../assets/cnn/eval.sgds");
}

/// What the firmware that teaches a new class embeds (`finetune-new-class`), written by
/// `host-sim device-assets --new-class 3`: the [`MotionModel`](crate::model::MotionModel)
/// pre-trained on every class but [`NEW_CLASS`](new_class::NEW_CLASS), and the recordings
/// to teach it from and to evaluate on, as features, the watch worn as in training.
pub mod new_class {
    /// The class the pre-trained model never saw (3, badminton), which the device learns.
    pub const NEW_CLASS: usize = 3;
    /// The checkpoint pre-trained without [`NEW_CLASS`], aligned for reading in place.
    pub static PRETRAINED: &[u8] =
        safegrad::include_checkpoint!("../assets/new-class/pretrained.sgck");
    /// The recordings to learn from: as many of every class, the new one's among them.
    pub static FINETUNE_SET: &[u8] = include_bytes!("../assets/new-class/finetune.sgds");
    /// The held-out recordings of every class.
    pub static EVAL_SET: &[u8] = include_bytes!("../assets/new-class/eval.sgds");
}

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
