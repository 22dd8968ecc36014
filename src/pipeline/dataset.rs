//! The export mode: pretext samples (inputs and pseudo-labels) written to Parquet as a dataset
//! for trainers outside sslpipe. The workers run the task right after decoding; one thread
//! restores source order and writes rows and error records, so the files are the same whatever
//! the thread count.

use std::sync::Arc;
use std::time::Instant;

use async_channel::Receiver;

use super::consume::{Consumer, Flow, consume};
use super::engine;
use super::stats::{Clock, Counters, Stage};
use super::summary::RunSummary;
use super::workers::{Decoded, Prepared, PretextPrepare};
use super::write::{SinkStage, Written};
use super::{PipelineError, RunOptions, run_metadata};
use crate::config::{OnError, Pipeline};
use crate::pretext::{PretextSample, TaskConfig};
use crate::sink::{ErrorRecord, TensorRow, TensorSinkSpec, TensorWriter};
use crate::source::StopFlag;

pub fn run(
    plan: &Pipeline,
    task_config: &TaskConfig,
    epochs: u64,
    options: RunOptions,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let task = crate::pretext::build(task_config, plan.decode.size as usize)?;
    let signature = task.signature();
    let out_dir = plan.output.dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| crate::sink::io_err(&out_dir, e))?;
    crate::sink::remove_previous_outputs(&out_dir)?;
    // What a trainer elsewhere needs to read the rows (jigsaw: the permutation set its labels index).
    task.write_dataset_files(&out_dir)?;
    let spec = TensorSinkSpec {
        dir: out_dir.clone(),
        task: task.name().to_string(),
        signature,
        rows_per_file: plan.output.rows_per_file,
        row_group_rows: plan.output.row_group_rows,
        metadata: run_metadata(plan),
    };
    let out = SinkStage::<TensorWriter>::open(spec, &out_dir)?;

    let counters = Arc::new(Counters::new("exported"));
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
        engine::Passes::sorted(epochs),
        &stop,
        &counters,
        &stages[0],
        &stages[1],
    )?;
    let (on_error, sink_stage, stop_on_fail) = (plan.on_error, stages[2].clone(), stop.clone());
    let sink_counters = counters.clone();
    let sink = std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            write(
                items,
                out,
                &sink_counters,
                on_error,
                &stop_on_fail,
                &sink_stage,
            )
        })
        .map_err(PipelineError::Spawn)?;
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
            Err(PipelineError::Panicked { stage: "sink" }),
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

/// The export's consumer: pretext samples straight into the dataset files, in source order.
struct Export<'a> {
    out: SinkStage<TensorWriter>,
    counters: &'a Counters,
}

impl Consumer<PretextSample> for Export<'_> {
    fn item(
        &mut self,
        key: String,
        epoch: u64,
        item: Prepared<PretextSample>,
        clock: &mut Clock,
    ) -> Result<Flow, PipelineError> {
        let row = TensorRow {
            key,
            epoch,
            width: item.width,
            height: item.height,
            sample: item.item,
        };
        clock.busy(|| self.out.write(&row))?;
        clock.items += 1;
        Counters::add(&self.counters.done, 1);
        Ok(Flow::Continue)
    }

    fn skipped(
        &mut self,
        _epoch: u64,
        record: ErrorRecord,
        clock: &mut Clock,
    ) -> Result<(), PipelineError> {
        clock.busy(|| self.out.skipped(&record))
    }
}

/// Consumes the samples and publishes; returns what was published even when it failed part-way.
fn write(
    items: Receiver<Decoded<PretextSample>>,
    out: SinkStage<TensorWriter>,
    counters: &Counters,
    on_error: OnError,
    stop: &StopFlag,
    stage: &Stage,
) -> (Written, Result<(), PipelineError>) {
    let mut clock = Clock::default();
    let mut export = Export { out, counters };
    let mut result = consume(&items, &mut export, on_error, stop, &mut clock, None).map(drop);
    drop(items);
    let written = export.out.finish(&mut result);
    stage.merge(clock);
    (written, result)
}
