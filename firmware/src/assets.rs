//! What the firmware embeds at build time, written by `host-sim device-assets`: the
//! pre-trained model and the shifted fine-tuning and evaluation sets (as features).

/// The pre-trained checkpoint (`safegrad::checkpoint` format).
pub static PRETRAINED: &[u8] = include_bytes!("../assets/pretrained.sgck");
/// The shifted recordings to fine-tune on, as features (`safegrad::dataset` format).
pub static FINETUNE_SET: &[u8] = include_bytes!("../assets/finetune.sgds");
/// The shifted held-out recordings, as features.
pub static EVAL_SET: &[u8] = include_bytes!("../assets/eval.sgds");
