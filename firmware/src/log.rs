//! What the fine-tuning programs log.

use motion::job::{JobReport, NewClassReport, ReplayReport};

use safegrad::Error;

use crate::board::{exit, per, stack};

/// Logs what the fine-tuning job measured: the accuracies, the steps, the divergence
/// guard's interventions, the time per step, the checkpoint's CRC and the memory minimum.
#[inline(never)]
pub fn job(r: &JobReport) {
    defmt::info!(
        "held-out accuracy before fine-tuning: {=usize}/{=usize}",
        r.correct_before,
        r.eval_samples
    );
    defmt::info!(
        "held-out accuracy after fine-tuning: {=usize}/{=usize}",
        r.correct_after,
        r.eval_samples
    );
    defmt::info!(
        "validation gate: fine-tuning cross-validated {=usize}/{=usize} correct, pre-trained {=usize}/{=usize}: committed {=bool}",
        r.validation_after.correct,
        r.validation_after.rows,
        r.validation_before.correct,
        r.validation_before.rows,
        r.committed
    );
    if !r.committed {
        defmt::warn!("fine-tuning does not beat the pre-trained model on the samples held out: the pre-trained model is kept");
    }
    defmt::info!(
        "{=usize} epochs, {=usize} steps on {=usize} samples, {=usize} trainable, final loss {=f32}",
        r.epochs,
        r.steps,
        r.finetune_samples,
        r.trainable,
        r.final_loss
    );
    if r.rejected > 0 || r.rollbacks > 0 {
        defmt::warn!(
            "divergence guard: {=usize} samples refused as non-finite, {=usize} rollbacks to the last good epoch (learning rate halved each time)",
            r.rejected,
            r.rollbacks
        );
    }
    if let Some(why) = r.last_divergence {
        defmt::warn!("divergence guard: last rollback because {}", why);
    }
    defmt::info!(
        "ticks per step {=u32} (SysTick, core clock; {=usize} steps with the gate's folds)",
        per(r.train_ticks, r.all_steps as u32),
        r.all_steps
    );
    defmt::info!("checkpoint crc32 {=u32:#010x}", r.checkpoint_crc32);
    // What the model needs at the least: parameters, the trainable ones' gradients, one
    // step's activations and the optimiser state, 4 bytes each.
    let scalars = r.parameters + r.trainable + r.activations + r.optimiser_state;
    defmt::info!(
        "memory minimum {=usize} bytes: {=usize} parameters, {=usize} gradients, {=usize} activation values, {=usize} optimiser scalars",
        scalars * 4,
        r.parameters,
        r.trainable,
        r.activations,
        r.optimiser_state
    );
}

/// Logs the held-out accuracy on the classes the model knew and on the class it was taught.
#[inline(never)]
pub fn new_class(r: &NewClassReport) {
    defmt::info!(
        "other classes: {=usize}/{=usize} held-out correct before, {=usize}/{=usize} after",
        r.old_correct_before,
        r.old_samples,
        r.old_correct_after,
        r.old_samples
    );
    defmt::info!(
        "new class {=usize}: {=usize}/{=usize} held-out correct before, {=usize}/{=usize} after",
        r.class,
        r.new_correct_before,
        r.new_samples,
        r.new_correct_after,
        r.new_samples
    );
    defmt::info!(
        "the full-batch fit uses {=usize} bytes more: the training rows' latents and the head while the folds fit",
        r.fit_bytes
    );
}

/// Logs the held-out accuracy on the original installation, which the replayed rows keep.
#[inline(never)]
pub fn replay(r: &ReplayReport) {
    defmt::info!(
        "original installation: {=usize}/{=usize} held-out correct before, {=usize}/{=usize} after ({=usize} rows replayed)",
        r.original_correct_before,
        r.original_samples,
        r.original_correct_after,
        r.original_samples,
        r.replayed
    );
}

/// Ends a fine-tuning program: logs the stack's high-water mark and exits with 0 if the job
/// succeeded within the stack budget, 4 if the stack exceeded it, 1 if the job failed.
pub fn finish(result: Result<(), Error>) -> ! {
    let used = stack::high_water();
    defmt::info!(
        "stack high-water mark {=usize} bytes of a {=usize}-byte budget (stack region {=usize} bytes below the statics)",
        used,
        stack::BUDGET,
        stack::region()
    );
    if used > stack::BUDGET {
        defmt::error!("the stack exceeded its budget");
        exit(4)
    }
    match result {
        Ok(()) => exit(0),
        Err(e) => {
            defmt::error!("job failed: {}", e);
            exit(1)
        }
    }
}
