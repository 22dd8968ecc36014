//! The export phase: pretext samples (inputs and pseudo-labels) written to Parquet for trainers
//! outside sslpipe. The workers run the task right after decoding; one thread restores source
//! order and writes rows and error records, so the files are the same whatever the thread count.

use std::sync::Arc;
use std::time::Instant;

use async_channel::Receiver;

use super::engine;
use super::reorder::Reorder;
use super::stats::{Clock, Counters, Stage};
use super::summary::RunSummary;
use super::workers::{Decoded, Prepare, Prepared};
use super::{PipelineError, RunOptions, run_metadata};
use crate::config::{OnError, Pipeline};
use crate::pretext::{PretextSample, PretextTask, RgbView};
use crate::rng::Rng;
use crate::sink::{ErrorRecord, ErrorsFile, TensorSinkSpec, TensorWriter};

/// Workers' share: the pretext task on the decoded image, randomness from (seed, key, epoch).
#[derive(Clone)]
pub struct PretextPrepare {
    pub task: Arc<dyn PretextTask>,
    pub seed: u64,
}

impl Prepare for PretextPrepare {
    type Item = PretextSample;
    const STAGE: &'static str = "pretext";
    fn prepare(
        &mut self,
        rgb: &[u8],
        size: usize,
        key: &str,
        epoch: u64,
    ) -> Result<PretextSample, String> {
        let mut rng = Rng::for_sample(self.seed, key, epoch);
        Ok(self.task.make(
            RgbView {
                width: size,
                height: size,
                pixels: rgb,
            },
            &mut rng,
        ))
    }
}

pub fn run(plan: &Pipeline, options: RunOptions) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let (Some(task_config), Some(export)) = (&plan.pretext, &plan.export) else {
        return Err(PipelineError::stage(
            "export",
            None,
            "the pipeline has no [pretext] or no [export]".into(),
        ));
    };
    let task = crate::pretext::build(task_config, plan.decode.size as usize)
        .map_err(|e| PipelineError::stage("pretext", None, e.to_string()))?;
    let signature = task.signature();
    let out_dir = plan.output.dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| crate::sink::io_err(&out_dir, e))?;
    crate::sink::remove_previous_outputs(&out_dir)?;
    // What a trainer elsewhere needs to read the rows (jigsaw: the permutation set its labels index).
    task.write_dataset_files(&out_dir)
        .map_err(|e| PipelineError::stage("export", None, e.to_string()))?;
    let spec = TensorSinkSpec {
        dir: out_dir,
        task: task.name().to_string(),
        signature,
        rows_per_file: plan.output.rows_per_file,
        row_group_rows: plan.output.row_group_rows,
        metadata: run_metadata(plan),
    };
    let writer = TensorWriter::create(spec)?;
    let errors = ErrorsFile::create(&plan.output.dir)?;

    let counters = Arc::new(Counters::default());
    let stages = [
        Arc::new(Stage::new("source", 1)),
        Arc::new(Stage::new("decode", plan.workers)),
        Arc::new(Stage::new("sink", 1)),
    ];
    let stop = options.stop.clone();
    let prepare = PretextPrepare {
        task: task.clone(),
        seed: plan.seed,
    };
    let (items, upstream) = engine::start(
        plan,
        prepare,
        engine::Passes::sorted(export.epochs),
        &stop,
        &counters,
        &stages[0],
        &stages[1],
    )?;
    let (on_error, sink_stage, stop_on_fail) = (plan.on_error, stages[2].clone(), stop.clone());
    let sink = std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || write(items, writer, errors, on_error, &stop_on_fail, &sink_stage))
        .map_err(engine::spawn_err)?;
    let ((upstream_result, sink_result), interrupted) = engine::supervise(
        options.handle_signals,
        options.progress,
        &counters,
        &stop,
        move || {
            let sink_result = sink.join();
            (upstream.join(), sink_result)
        },
    )?;
    let (written, status) = sink_result.unwrap_or_else(|_| {
        (
            Default::default(),
            Err(PipelineError::stage(
                "sink",
                None,
                "the thread panicked".into(),
            )),
        )
    });
    upstream_result?;
    status?;
    Ok(RunSummary::new(
        plan,
        &counters,
        &stages.iter().collect::<Vec<_>>(),
        started.elapsed(),
        written,
        None,
        interrupted || stop.is_stopped(),
    ))
}

/// Restores order and writes; returns what was published even when it failed part-way.
fn write(
    items: Receiver<Decoded<PretextSample>>,
    mut writer: TensorWriter,
    mut errors: ErrorsFile,
    on_error: OnError,
    stop: &crate::source::StopFlag,
    stage: &Stage,
) -> (super::write::Written, Result<(), PipelineError>) {
    let mut clock = Clock::default();
    let mut reorder = Reorder::default();
    let mut result = (|| {
        while let Ok(item) = clock.wait_in(|| items.recv_blocking()) {
            reorder.push(item.seq, item, |item: Decoded<PretextSample>| {
                let t = Instant::now();
                let r = match item.result {
                    Ok(Prepared {
                        item: sample,
                        width,
                        height,
                    }) => {
                        clock.items += 1;
                        writer
                            .push(&item.key, item.epoch, width, height, &sample)
                            .map_err(PipelineError::from)
                    }
                    Err((stage, reason)) => {
                        let record = ErrorRecord {
                            key: item.key.clone(),
                            stage: stage.to_string(),
                            reason: reason.clone(),
                        };
                        errors.write(&record)?;
                        if on_error == OnError::Fail {
                            stop.stop();
                            return Err(PipelineError::BadImage {
                                stage,
                                key: item.key,
                                reason,
                            });
                        }
                        Ok(())
                    }
                };
                clock.busy += t.elapsed();
                r
            })?;
        }
        Ok(())
    })();
    drop(items);
    let rows = writer.rows();
    let written = super::write::Written::publish(errors, rows, || writer.finish(), &mut result);
    stage.merge(clock);
    (written, result)
}
