"""Every file a case study writes under its output URI, declared once.

The declaration below is what docs/OUTPUTS.md shows (``python -m jobs.output_schema > docs/OUTPUTS.md``;
a unit test fails when the two differ) and what ``check(case, folder)`` holds a run's output folder to:
files present, JSON/YAML keys, CSV columns, HDF5 groups, attributes, dataset dtypes and ranks, PNG
signatures. Paths and names may hold placeholders (``<run>``): each matches one path component.

Whether an optional file must exist is decided, where the config can tell, from the run's own
config.yaml (``When.test``); a file whose presence depends on the data (a figure with nothing to
draw) is allowed but not required. Anything in the folder, a JSON key, a CSV column or an HDF5 dataset
that is not declared here is reported too: a new output is declared here before a job writes it.
"""
from __future__ import annotations

import csv
import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distributed import host_stats
from distributed.metrics import COLUMNS as METRIC_COLUMNS, CUMULATIVE_COLUMNS, RATE_COLUMNS

CASES = ("redshift", "landcover", "domst", "spacetime")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_RECORD_FILES = 3  # record files (bundles, shards) checked per pattern: the first few, by name


@dataclass(frozen=True)
class When:
    """When an output exists: `text` for people; `test(config)` on the run's config.yaml where the config
    decides it (None: it depends on the data, so the output is allowed but never required)."""
    text: str
    test: Callable[[dict], bool] | None = None


@dataclass(frozen=True)
class Key:
    """A JSON or YAML key, a CSV column or an HDF5 attribute."""
    name: str
    meaning: str
    when: When | None = None  # None: always there


@dataclass(frozen=True)
class Dataset:
    path: str        # inside the HDF5 file, placeholders allowed: '<run>/workers/<worker>/accuracy'
    dtype: str       # numpy dtype name
    shape: tuple     # symbolic sizes; the rank is checked
    meaning: str


@dataclass(frozen=True)
class Group:
    path: str
    meaning: str
    attrs: tuple[Key, ...] = ()


@dataclass(frozen=True)
class Output:
    path: str                    # relative to the output URI; a trailing '/' marks a folder
    kind: str                    # json | yaml | csv | hdf5 | png | markdown | folder | file
    meaning: str
    when: When | None = None     # None: always written by a successful run
    keys: tuple[Key, ...] = ()   # json/yaml top-level keys, csv columns, hdf5 root attributes
    groups: tuple[Group, ...] = ()
    datasets: tuple[Dataset, ...] = ()
    records: str | None = None   # 'module:NAME' of an rdd_io.schema.Schema the file is written with


# ---------------------------------------------------------------- conditions on the run's config
def _cfg(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _simulated_input(folder: str) -> When:
    return When(f"data.source is simulate and data.input is empty (the simulated input is written to {folder})",
                lambda c: _cfg(c, "data.source") == "simulate" and not _cfg(c, "data.input"))


def _flag(dotted: str) -> When:
    return When(f"{dotted} is true", lambda c: bool(_cfg(c, dotted)))


def _approach(name: str) -> When:
    return When(f"{name} is in experiments.approaches", lambda c: name in _cfg(c, "experiments.approaches"))


def _mode(name: str) -> When:
    return When(f"{name} is in experiments.modes", lambda c: name in _cfg(c, "experiments.modes"))


DATA_DEPENDENT = When("when there is something to draw (always, in practice)")
TENSORBOARD = Output("tensorboard/<run>/<role>/events.out.tfevents.<stamp>", "file",
                     "TensorBoard event file of one role that trains, scalars per epoch (tags: see train.tensorboard "
                     "in conf/<case>.yaml); <run>: the run id (redshift), the cell id (land cover) or "
                     "<mode>_<approach> and <mode>_ablation (Dom-ST); <role>: worker_<i> or chief_0. View with "
                     "`tensorboard --logdir <output>/tensorboard` "
                     "(pip install tensorboard)", _flag("train.tensorboard"))
CHECKPOINTS = Output("checkpoints/", "folder", "checkpoints that `--resume` continues from",
                     When("when the job checkpoints"))


# ---------------------------------------------------------------- the files every job writes
ON_HOSTS = When("when the cluster runs on hosts (`python -m distributed.minicluster up --hosts N`)")
HOSTS = Output("hosts.csv", "csv", "each host's figures over the run, one row per host per "
               "cluster.host_sample_interval_s (distributed/host_stats.py), as Ganglia plots a machine's",
               ON_HOSTS, keys=tuple(Key(name, meaning) for name, meaning in host_stats.MEANINGS.items()))


def _summary(*keys: Key) -> Output:
    common = (
        Key("case", "the case study: redshift, landcover or domst"),
        Key("preset", "the --preset the run used (null: none)"),
        Key("status", "ok, or failed (then `error` says why)"),
        Key("resumed", "true when the run continued from checkpoints (--resume)"),
        Key("master", "the Spark master URL the run used", When("once Spark is up (missing if it never came up)")),
        Key("error", "the failure's own message line", When("when status is failed")),
        Key("wall_time_s", "seconds from start to end of the job, Spark start-up included"),
        Key("outputs", "names of the files the job published under the output URI"),
        Key("hosts", "{host: {address, roles, seconds, bytes_in, bytes_out, cpu_s, cpu_percent_of_host_mean, "
                     "cpu_percent_of_host_peak, rss_bytes_peak}} over the run (hosts.csv summed up)", ON_HOSTS),
        Key("hosts_error", "why the figures per host are missing", When("on a cluster with hosts, when they failed")),
    )
    return Output("summary.json", "json", "key figures of the run, machine-readable; written also when it fails",
                  keys=common + keys)


def _config(*sections: str) -> Output:
    keys = (Key("case", "the case study"), Key("preset", "the --preset the run used (null: none)"),
            Key("cluster", "conf/cluster.yaml as resolved: host, ports, executor memory, timeouts, run_dir"))
    keys += tuple(Key(s, f"the `{s}` section of conf/<case>.yaml as resolved (preset and --set applied)")
                  for s in sections)
    return Output("config.yaml", "yaml", "the resolved config of the run; `--resume` requires the same", keys=keys)


REPORT = Output("report.md", "markdown", "the run's tables and figures in Markdown, published numbers beside ours")

# ---------------------------------------------------------------- redshift
_RUN_ATTRS = (
    Key("cluster", "'single machine' or '<M> worker(s)'"),
    Key("workers", "M, the TF worker count (0: the single-process baseline)"),
    Key("data_mode", "same (every worker reads all the data) or different (disjoint shares)"),
    Key("dataset", "N, the first N samples of the bundle"),
    Key("mode", "sequential (baseline), staleness-aware, async, staleness-exp or sync"),
    Key("s", "updates the ps waits for before applying one (0 for the baseline)"),
    Key("wall_time_s", "seconds the run took, as the driver saw it"),
)
_UPDATES = (
    ("worker", "int32", "index of the worker that pushed the update"),
    ("read_version", "int64", "model version the worker had read when it started the epoch/batch"),
    ("tau", "int32", "staleness: versions applied since read_version (0 = fresh)"),
    ("lambda", "float64", "weight the update was applied with, lambda(tau) of train.schedule"),
    ("applied_version", "int64", "model version the update produced; -1: never applied"),
    ("time", "float64", "seconds since the ps started when the update arrived"),
)
REDSHIFT = (
    _config("data", "model", "train", "experiments"),
    _summary(
        Key("samples_available", "spectra in the bundle RDD (at least max(data.sizes))"),
        Key("runs", "number of trainings: baselines plus TFoS runs"),
        Key("final_accuracy", "{run id: {worker key: training accuracy after the last epoch}}; worker keys "
                              "are 'single' (baseline) or 'worker:<i>'"),
        Key("epochs_to_stable", "{run id: {worker key: {criterion '1'|'2': epochs until training accuracy "
                                "stops improving under train.stopping_rule, or '>N' (a string) if it did not stop "
                                "within train.max_epochs = N}}}: the criterion a cell stopped on (ids ending -c1, "
                                "-c2), both criteria for runs that trained max_epochs"),
        Key("seen", "{run id: {worker key: [{samples, checksum} per epoch]}}: what each worker trained on in each "
                    "epoch: the sample count and an order-free checksum of the samples' zipWithIndex indices "
                    "(rdd_io.redshift_bundle.index_checksum), checked against the data mode before the run counts "
                    "(TFoS runs only)"),
        Key("feeding", "{run id: [{epoch, workers: [{worker, items, put_s, consumed_s}]}]}: data.feed spark: per "
                       "epoch and worker, the blocks fed, seconds to put them in its queue and until it had read them",
            When("when data.feed is spark", lambda c: _cfg(c, "data.feed") == "spark")),
        Key("stops", "{run id: [{worker, epochs, left_at_s, s_eff_after, workers_still_active}]}: workers whose "
                     "criterion fired and that left the parameter server while others went on",
            When("when workers stop on a criterion (train.stop_on)")),
        Key("updates", "{run id: {received, applied, max_tau}}: pushes at the ps, updates applied, largest "
                       "staleness (TFoS runs only)"),
        Key("epoch_time_s", "{run id: {worker key: [seconds since that worker started, at the end of each "
                            "epoch]}} (TFoS runs only)"),
        Key("faults", "{run id: [{worker, lost_at_s, at_version, epochs_completed, message, address, cause, "
                      "rejoined_at_epoch, samples_not_seen}]}: workers lost during a run (address: the worker's "
                      "host as the ps saw it; cause: its host stopped answering, or its connection was "
                      "closed); empty when none was",
            When("when the job records lost workers")),
        Key("resume", "{finished_before, continued, started}: run ids taken from the earlier run, continued "
                      "from their checkpoints, or started anew", When("with --resume")),
    ),
    REPORT,
    Output("stable_<N>.csv", "csv", "epochs to a stable training accuracy per cluster and worker, the rows of "
           "thesis Tables 5.1/5.2, for N samples; empty cell: that data mode was not run",
           When("one per N in data.sizes, when experiments.baseline is true or train.schedule is inverse",
                lambda c: _cfg(c, "experiments.baseline") or _cfg(c, "train.schedule") == "inverse"),
           keys=(Key("cluster", "'single machine' or '<M> worker(s)'"),
                 Key("worker", "'-' (one machine or one worker) or '#<i>', 1-based"),
                 *(Key(f"crit{c}_{m}", f"epochs to stable under criterion {c} "
                       f"({'patience 1, min delta 0.001' if c == 1 else 'patience 3, min delta 0.0001'}), "
                       f"{m} data") for c in (1, 2) for m in ("same", "different")))),
    Output("stable_<N>.md", "markdown", "the same table with the thesis's numbers in brackets, and the findings "
           "(fewer epochs with more nodes, same vs different data, 75% accuracy epoch) with our numbers",
           When("beside each stable_<N>.csv", lambda c: _cfg(c, "experiments.baseline")
                or _cfg(c, "train.schedule") == "inverse")),
    Output("stable_bars_<N>.png", "png", "epochs to stable per cluster/worker, same vs different data, one "
           "panel per criterion (thesis Figs. 5.4/5.5)", DATA_DEPENDENT),
    Output("accuracy.png", "png", "training accuracy per epoch, one panel per (N, data mode), a line per run "
           "and worker (thesis Fig. 5.3)", DATA_DEPENDENT),
    Output("loss.png", "png", "training loss per epoch, laid out as accuracy.png (thesis Fig. 5.6)",
           DATA_DEPENDENT),
    Output("ablation.csv", "csv", "the staleness ablation: one row per run on the largest set",
           _flag("experiments.ablation"),
           keys=(Key("id", "run id: <N>-<data mode>-M<workers>-<mode>-s<s>"),
                 Key("mode", "staleness-aware, async or sync"), Key("workers", "M"),
                 Key("s", "updates the ps waits for before applying"),
                 Key("final_accuracy", "mean over workers of the last epoch's training accuracy"),
                 Key("stable_crit1", "mean over workers of epochs to stable, criterion 1"),
                 Key("stable_crit2", "mean over workers of epochs to stable, criterion 2"),
                 Key("updates_applied", "updates the ps applied"),
                 Key("versions", "distinct model versions the applied updates produced"),
                 Key("tau_mean", "mean staleness of the updates"), Key("tau_max", "largest staleness"),
                 Key("tau_hist", "JSON {tau: updates}"))),
    Output("tau_hist.png", "png", "staleness per update, grouped bars per ablation run",
           When("when experiments.ablation is true and the ps applied updates")),
    Output("redshift.h5", "hdf5", "every run's curves and every update the ps received",
           keys=(Key("ablation_ids", "JSON list of the run ids that belong to the ablation"),),
           groups=(Group("<run>", "one group per run, named by its id (e.g. 600-different-M2-staleness-aware-s1, "
                         "600-single)", _RUN_ATTRS),
                   Group("<run>/workers/<worker>", "one group per worker: 'single' (baseline) or 'worker_<i>'",
                         (Key("key", "the worker key of summary.json: 'single' or 'worker:<i>'"),
                          Key("epochs_to_stable", "JSON {criterion: epochs or '>N' (never stopped)}"),
                          Key("samples", "samples in the worker's share"))),
                   Group("<run>/updates", "one row per update the ps received, in arrival order (empty for "
                         "the baseline)")),
           datasets=(Dataset("<run>/workers/<worker>/accuracy", "float32", ("epochs",),
                             "training accuracy per epoch"),
                     Dataset("<run>/workers/<worker>/loss", "float32", ("epochs",), "training loss per epoch"),
                     *(Dataset(f"<run>/updates/{col}", dtype, ("updates",), meaning)
                       for col, dtype, meaning in _UPDATES))),
    Output("bundles/", "folder", "the training shares the workers read: <N>-all/ (same data) or "
           "<N>-different-M<M>/worker-<i>/ (one disjoint share per worker)",
           When("when data.feed is tensorflow", lambda c: _cfg(c, "data.feed") == "tensorflow")),
    Output("bundles/<set>/part-<k>.h5", "hdf5", "a share read by every worker (same data)",
           When("when data.feed is tensorflow and experiments.data_modes has same",
                lambda c: _cfg(c, "data.feed") == "tensorflow" and "same" in _cfg(c, "experiments.data_modes")),
           records="rdd_io.redshift_bundle:BUNDLE"),
    Output("bundles/<set>/<worker>/part-<k>.h5", "hdf5", "one worker's share (different data)",
           When("when data.feed is tensorflow and experiments.data_modes has different or the ablation runs",
                lambda c: _cfg(c, "data.feed") == "tensorflow" and (
                    "different" in _cfg(c, "experiments.data_modes") or _cfg(c, "experiments.ablation"))),
           records="rdd_io.redshift_bundle:BUNDLE"),
    Output("weights/<run>.weights.h5", "file", "the final Keras weights of each TFoS run (Keras HDF5 weights)"),
    Output("input/shard-<k>.h5", "hdf5", "simulated spectra, one shard per Spark task", _simulated_input("input/"),
           records="rdd_io.schema:REDSHIFT"),
    TENSORBOARD, CHECKPOINTS,
)

# ---------------------------------------------------------------- land cover
_ROLES = ("ps:0", "chief:0", "worker:0", "worker:1", "worker:2")
_ROLE_COLUMNS = (("out MiB/s", "mean bytes sent per second"), ("in MiB/s", "mean bytes received per second"),
                 ("cpu %", "mean CPU, % of one core"),
                 ("cpu % host", "mean CPU, % of the role's host (all its cores; the thesis's Ganglia unit)"),
                 ("wait % peak", "peak wait (runqueue + block-I/O wait of the role's threads, per process), "
                                 "% of one core"),
                 ("rss MiB peak", "peak resident memory, process and children"))
_METRIC_MEANINGS = {
    "t_s": "seconds since the cell started, at each sample",
    "bytes_in": "TCP payload bytes received since the cell started (all the role's sockets)",
    "bytes_out": "TCP payload bytes sent since the cell started",
    "bytes_in_per_s": "bytes received per second over the interval before the sample",
    "bytes_out_per_s": "bytes sent per second over the interval",
    "cpu_percent": "CPU of the role and its children, % of one core",
    "wait_percent": "runqueue + I/O wait, % of one core",
    "runq_wait_percent": "runqueue wait alone",
    "io_wait_percent": "block-I/O wait alone (NaN without kernel delay accounting)",
    "rss_bytes": "resident memory of the role and its children",
    "n_procs": "processes counted for the role",
}
_SUMMARY_COLUMNS = (
    Key("run", "the cell id"), Key("role", "ps:0, chief:0 or worker:<i>"),
    Key("samples", "samples taken"), Key("duration_s", "seconds covered"),
    *(Key(f"{c}_total", f"{c} at the end of the cell") for c in CUMULATIVE_COLUMNS),
    *(Key(f"{c}_{stat}", f"{c}: {'time-weighted mean' if stat == 'mean' else 'largest sample'} (empty: "
          f"not measured)") for c in RATE_COLUMNS for stat in ("mean", "peak")),
)
_BYTES_COLUMNS = (
    Key("steady_steps", "steps in the cell's steady window (after the warm-up steps)"),
    Key("measured_bytes_per_step", "TCP payload bytes all roles sent per steady step (empty: not measured)"),
    Key("analytic_bytes_per_step", "models.landcover.step_bytes: variables read, gradients and BN statistics "
                                   "written, activations and their gradients across cuts, indices, loss"),
    Key("measured_over_analytic", "measured / analytic"),
)
LANDCOVER = (
    _config("data", "model", "train", "experiments", "placement"),
    _summary(
        Key("sampling", "{patch set size: {per_class, patch, seed, available per class, with_replacement: "
                        "classes sampled with replacement}}"),
        Key("cells", "{cell id: {plan, batch_size, loss, accuracy, epoch_time_s (lists per epoch), "
                     "first_step_loss, steps, test_loss and test_accuracy (held-out region), bytes_per_step "
                     "(model-parallel cells: {measured: {steps, total, "
                     "per_role: {role: {bytes_in, bytes_out}}, exact} or null, analytic: {total, terms, out, in}, "
                     "ratio})}}; cell ids are <patches>-<plan>-b<batch>-e<epochs>[-w<window s>], 'single' "
                     "and <patches>-data-parallel-b<batch>-e<epochs>"),
        Key("bytes_out", "{cell id: {role: TCP payload bytes the role sent during the cell}}"),
        Key("hosts_check", "{cell id: {steps, hosts_bytes_out, roles_bytes_out, ratio, exact, comparable, "
                           "shared_hosts, within}}: bytes out of the hosts' links against bytes out of the roles' "
                           "sockets over the cell's steady window (jobs/landcover_hosts.py); each model-parallel "
                           "cell's figures per host are under cells.<id>.hosts", ON_HOSTS),
        Key("held_out", "{nearest_signature_test_accuracy, test_samples}: the no-learning baseline on the held-out "
                        "test region (the CNN's test_loss and test_accuracy are in cells)"),
    ),
    REPORT,
    Output("plans.csv", "csv", "one row per placement plan at train.batch_size on the largest patch set: "
           "time per epoch, final loss/accuracy, and per role traffic, CPU, wait and memory",
           keys=(Key("cell", "cell id"), Key("plan", "plan name in conf/landcover_plans.yaml, or data parallel"),
                 Key("batch_size", "batch size"), Key("dataset", "patches in the set"),
                 Key("epoch_time_s", "mean seconds per epoch"), Key("final_loss", "last epoch's training loss"),
                 Key("final_accuracy", "last epoch's training accuracy"),
                 *(Key(f"{role} {col}", f"{meaning}, {role}")
                   for role in _ROLES for col, meaning in _ROLE_COLUMNS), *_BYTES_COLUMNS)),
    Output("plans_per_host.csv", "csv", "the plans of plans.csv per host of the mini-cluster, as the thesis's "
           "Ganglia measured each machine (jobs/landcover_hosts.py)", ON_HOSTS,
           keys=(Key("cell", "cell id"), Key("plan", "plan name"), Key("host", "the host's network namespace"),
                 Key("address", "the host's address"), Key("roles", "the roles that ran on the host"),
                 Key("seconds", "seconds the cell's window covered"),
                 Key("in MiB", "MiB the host's links (its own card and its TF card) received during the cell "
                               "(whole frames)"),
                 Key("out MiB", "MiB the host's links (its own card and its TF card) sent during the cell "
                                "(whole frames)"),
                 Key("in MiB/s", "mean MiB received per second"), Key("out MiB/s", "mean MiB sent per second"),
                 Key("cpu % of host mean", "CPU of the host's cgroup, % of all the machine's cores, mean"),
                 Key("cpu % of host peak", "the same, the largest sampling interval"),
                 Key("rss MiB peak", "peak resident memory summed over the host's processes, MiB"))),
    Output("hosts.png", "png", "per plan, each host's MiB/s out and in and its CPU % of the host", ON_HOSTS),
    Output("bytes_per_step.csv", "csv", "every model-parallel cell: bytes per step measured over its steady window "
           "beside the analytic count (models.landcover.step_bytes), in total and per role",
           keys=(Key("cell", "cell id"), Key("plan", "plan name"), Key("batch_size", "batch size"), *_BYTES_COLUMNS,
                 *(Key(f"{role} {way} {kind}", f"bytes {'sent' if way == 'out' else 'received'} per step by {role}, "
                                               f"{kind}") for role in _ROLES for way in ("out", "in")
                   for kind in ("measured", "analytic")))),
    Output("parallelism.csv", "csv", "model parallelism (default plan) vs data parallelism per role, per set",
           _flag("experiments.data_parallel"),
           keys=(Key("cell", "cell id"), Key("dataset", "patches in the set"),
                 Key("approach", "default (model parallel) or data parallel"), Key("role", "the role"),
                 Key("cpu_percent_mean", "mean CPU, % of one core"), Key("rss_MiB_peak", "peak resident memory"),
                 Key("in_MiB_per_s", "mean MiB received per second"),
                 Key("out_MiB_per_s", "mean MiB sent per second"))),
    Output("batch_sizes.csv", "csv", "traffic of the default plan per batch size, in and out per role, each size "
           "trained for the same wall-clock window (thesis Fig. 6.5 a and b)",
           keys=(Key("batch_size", "batch size"), Key("epochs", "epochs the cell trained"),
                 Key("dataset", "patches in the set"), Key("window_s", "the cell's wall-clock window (0: epochs only)"),
                 Key("seconds", "seconds the cell took"), Key("steps", "training steps of the cell"),
                 Key("cluster_in_MiB_per_s", "all roles' MiB received per second"),
                 Key("cluster_out_MiB_per_s", "all roles' MiB sent per second"),
                 *(Key(f"{role} {way} MiB/s", f"mean MiB {'received' if way == 'in' else 'sent'} per second, {role}")
                   for role in _ROLES for way in ("in", "out")), *_BYTES_COLUMNS)),
    Output("curves.png", "png", "loss and accuracy per epoch, default plan beside the single machine "
           "(thesis Fig. 6.4)", When("when train.epochs > 1", lambda c: _cfg(c, "train.epochs") > 1)),
    Output("traffic.png", "png", "MiB/s in and out per role over time, one panel per plan", DATA_DEPENDENT),
    Output("cpu_wait.png", "png", "CPU % and wait % per role as box plots, one row per plan", DATA_DEPENDENT),
    Output("memory.png", "png", "peak and mean resident memory per role, bars per plan", DATA_DEPENDENT),
    Output("metrics.h5", "hdf5", "every role's sampled series, per cell",
           keys=(Key("columns", "JSON list of the series columns"),),
           groups=(Group("<cell>", "one group per measured cell (model-parallel cells, the data-parallel run)",
                         (Key("meta", "JSON sampling facts", When("when the sampler recorded any")),)),
                   Group("<cell>/<role>", "ps:0, chief:0, worker:<i>")),
           datasets=tuple(Dataset(f"<cell>/<role>/{c}", "float64", ("samples",), _METRIC_MEANINGS[c])
                          for c in METRIC_COLUMNS)),
    Output("metrics_summary.csv", "csv", "one row per (cell, role): totals, means and peaks of metrics.h5",
           keys=_SUMMARY_COLUMNS),
    Output("metrics.json", "json", "metrics.h5 as JSON: {cell id: {role: {column: [values]}}} (null: not "
           "measured)"),
    Output("patches/<N>/shard-<k>.h5", "hdf5", "the patch sets the roles train on (N patches each)",
           records="rdd_io.landcover_patches:LANDCOVER_PATCHES"),
    Output("patches/<N>/<modality>-<k>.raw", "raw", "each shard's rgb (float32 [n, 25, 25, 3]), hsi (float32 "
           "[n, 25, 25, bands]) and label (int32 [n]) as little-endian values: what each model-parallel worker "
           "reads for itself"),
    Output("scene/", "folder", "the simulated scene in the DFC2018 layout: hsi.tif, rgb/tile_r<row>_c<col>.tif, "
           "gt.tif, scene.json", _simulated_input("scene/")),
    TENSORBOARD, CHECKPOINTS,
)

# ---------------------------------------------------------------- Dom-ST
_APPROACHES = ("singlehead", "singlehead_p", "domst")
DOMST = (
    _config("data", "model", "train", "experiments", "placement"),
    _summary(
        Key("watersheds", "watersheds trained"),
        Key("median_nse", "{approach: median test NSE over watersheds}"),
        Key("mean_nse", "{approach: mean test NSE}"),
        Key("median_peak_flow_error", "{approach: median relative error of the test period's peak flow}"),
        Key("shares", "{singlehead_p_beats_singlehead, domst_beats_both: share of watersheds, 0-1}"),
        Key("times_s", "{mode (ipd|s): {approach: {phase_s, busiest_node_s, nodes_used, startup_s, nodes, driver_s, "
                       "driver_total_s}}}: each approach's own run per mode; phase_s (first node's start to last "
                       "node's end) is Table 1's time; seconds measured inside the roles and by the driver"),
        Key("speedups", "{approach: S over IP-D (Table 1), overall: S of singlehead_p over IP-D of domst, "
                        "all_approaches, parallel_efficiency}; null unless both modes ran"),
        Key("mode_nse_gap", "{approach: largest |NSE(IP-D) - NSE(S)| of a watershed}; null unless both modes ran"),
        Key("per_watershed", "the paper's per-watershed figures: {time_mode, speedup_mean, speedup_best, "
                             "speedup_best_watershed (Dom-ST over Singlehead(+P), training seconds), nse_gain_mean "
                             "(mean NSE, relative), nse_gain_mean_of_watersheds, nse_gain_best, "
                             "nse_gain_best_watershed, nse_gain_over_singlehead_best}; null where not computable"),
        Key("unscored", "{watershed: why its training or test period cannot be scored}; empty when all were"),
        Key("ablation", "{approach: {median_params, median_nse, beats_singlehead, beats_singlehead_p, beats_domst}}",
            When("experiments.ablation is not empty", lambda c: bool(_cfg(c, "experiments.ablation")))),
        Key("missing_days", "{watershed: discharge days missing (masked)}"),
        Key("missing_days_total", "sum of missing_days"),
        Key("domst_heads_on_separate_devices", "true when every watershed's Dom-ST heads and temporal block "
                                               "sat on pairwise different devices", _approach("domst")),
        Key("domst_devices", "{watershed: {heads: [device], temporal: device}}", _approach("domst")),
        Key("pixcon_correlation_median", "{pearson, spearman, spearman_within_groups, spearman_vs_distance, "
                                         "planted_vs_distance}: medians over watersheds of the learned Pix-Con "
                                         "weights against the simulator's runoff coefficients (over the watershed, "
                                         "inside each distance group), of the weights and of the planted "
                                         "coefficients against distance to water",
            When("when the input has the simulator's truth.npz and domst ran")),
        Key("targets", "{median_nse_domst, and the shares}: the figures the study's targets are stated on"),
    ),
    REPORT,
    Output("nse_per_watershed.csv", "csv", "one row per watershed: test NSE, peak-flow error and epochs per "
           "approach (the paper's Figure 3 as a table)",
           keys=(Key("watershed", "watershed id"), Key("site_no", "USGS site of its outlet"),
                 Key("pixels", "grid pixels in the watershed"), Key("k_groups", "Dom-ST pixel groups (heads)"),
                 Key("missing_days", "discharge days missing"),
                 *(Key(f"{col}_{a}", f"{meaning}, {a}", _approach(a)) for a in _APPROACHES
                   for col, meaning in (("nse", "test NSE"), ("peak_error", "relative peak-flow error"),
                                        ("epochs", "epochs trained (early stopping)"))),
                 Key("pixcon_spearman", "Spearman correlation of the Pix-Con weights with the planted runoff "
                                        "coefficients (empty without truth)"),
                 Key("unscored", "why the watershed could not be scored (empty: it was)"))),
    Output("nse_per_watershed.md", "markdown", "nse_per_watershed.csv as a Markdown table"),
    Output("times.csv", "csv", "Table 1: each approach's S run and IP-D run, training time and speedup, beside "
           "the paper's; last row the overall S(Singlehead(+P)) / IP-D(Dom-ST)",
           keys=(Key("approach", "approach, or 'overall: ...'"),
                 Key("S_s", "seconds, the S run's training phase: every watershed on one node (empty: S not run)"),
                 Key("IPD_s", "seconds, the IP-D run's training phase (empty: IP-D not run)"),
                 Key("IPD_nodes", "nodes the IP-D run used"), Key("speedup", "S_s / IPD_s"),
                 Key("S_with_startup_s", "the S run as the driver saw it, TensorFlowOnSpark start-up included"),
                 Key("IPD_with_startup_s", "the IP-D run as the driver saw it, start-up included"),
                 Key("paper_S_h", "the paper's S time, hours"),
                 Key("paper_IPD_h", "the paper's IP-D time, hours"), Key("paper_speedup", "the paper's speedup"))),
    Output("gains_per_watershed.csv", "csv", "per watershed: Dom-ST's speedup over Singlehead(+P) and its NSE gains",
           keys=(Key("watershed", "watershed id"), Key("time_mode", "the runs the seconds come from (s if run)"),
                 Key("train_s_singlehead_p", "Singlehead(+P)'s training seconds on the watershed"),
                 Key("train_s_domst", "Dom-ST's training seconds on the watershed"),
                 Key("speedup_domst_over_singlehead_p", "train_s_singlehead_p / train_s_domst"),
                 *(Key(f"nse_{a}", f"test NSE, {a}") for a in _APPROACHES),
                 Key("nse_gain_over_singlehead_p", "(nse_domst - nse_singlehead_p) / |nse_singlehead_p|"),
                 Key("nse_gain_over_singlehead", "(nse_domst - nse_singlehead) / |nse_singlehead|"),
                 Key("unscored", "why the watershed could not be scored (empty: it was)"))),
    Output("paper_figures.csv", "csv", "the paper's figures beside ours, with how ours is computed",
           keys=(Key("figure", "the paper's figure"), Key("paper", "its value (x: times; %: as a fraction)"),
                 Key("ours", "our value, same unit (empty: not computable in this run)"),
                 Key("unit", "x or %"), Key("how", "the quantity ours is"))),
    Output("ablation.csv", "csv", "one row per approach and ablation variant: median parameters and NSE, share of "
           "watersheds where it beats each of the paper's three approaches",
           When("experiments.ablation is not empty", lambda c: bool(_cfg(c, "experiments.ablation"))),
           keys=(Key("approach", "approach or variant"), Key("label", "its name in the report"),
                 Key("what", "what it changes"), Key("median_params", "median trainable parameters over watersheds"),
                 Key("median_nse", "median test NSE"),
                 *(Key(f"beats_{a}", f"share of scored watersheds where its NSE is above {a}'s (empty: itself "
                                     "or not run)") for a in _APPROACHES))),
    Output("figure3_nse.png", "png", "test NSE per watershed and approach, clipped at -1 (paper Figure 3)"),
    Output("results.json", "json", "everything the report is built from",
           keys=(Key("approaches", "approaches trained"), Key("primary_mode", "the mode scores come from (ipd if run)"),
                 Key("watersheds", "[{id, site_no, pixels, days, start, end, n_missing, k_groups, samples, "
                                   "unscored (only when it could not be scored)}]"),
                 Key("scores", "{watershed: {approach: {nse, peak_flow_error, epochs, train_s, devices, pixcon, "
                               "...}}}"),
                 Key("ablation", "ablation variants trained"),
                 Key("train_s", "{mode: {approach: {watershed: training seconds}}}"),
                 Key("times", "as summary.json's times_s"), Key("plans", "{mode: [[watershed ids] per node]}"),
                 Key("node_devices", "{mode: {role: devices the node had}}"),
                 Key("mode_nse_gap", "as in summary.json"), Key("speedups", "as in summary.json"),
                 Key("pixcon", "{watershed: {pearson, spearman, n, spearman_within_groups, spearman_vs_distance, "
                               "planted_vs_distance} or null}"),
                 Key("pixcon_design", "{head_input, partition, pixel_weights}: Dom-ST's Pix-Con design "
                                              "(model config)"))),
    Output("watersheds/<watershed>.h5", "hdf5", "one bundle per watershed (rdd_io/domst_bundle.py): aligned "
           "daily precipitation per pixel and outlet discharge; in group pixels/, distance_km and pixel per pixel "
           "(schema domst-watershed-pixels); attributes: watershed, site_no, n_missing",
           records="rdd_io.schema:DOMST_DAYS"),
    Output("input/", "folder", "the simulated region in the real formats: watersheds.json, precip/*.nc "
           "(CRU TS layout), distance_to_water.tif, discharge/<site>.rdb (USGS RDB), truth.npz",
           _simulated_input("input/")),
    TENSORBOARD, CHECKPOINTS,
)

# ---------------------------------------------------------------- space-time
_CELL = Key("cell", "the cell: <mode>-P<processes> (serial-P1: the one-process run every mode starts from)")
SPACETIME = (
    _config("data", "model", "mgrit", "experiments", "modelled", "train"),
    _summary(
        Key("cells", "cells run (mode x process count; P = 1 once)"),
        Key("equal_to_undecomposed", "true when every cell's forward and gradients equal the undecomposed network "
                                     "within 1e-5 relative at its check's last MGRIT iteration count"),
        Key("max_forward_rel_diff", "largest relative difference of the logits over the cells"),
        Key("max_gradient_rel_diff", "largest relative difference of a parameter gradient over the cells"),
        Key("halo_bytes_measured_over_analytic", "[min, max] over the cells with halos of measured / analytic halo "
                                                 "bytes (null: no cell had a space neighbour)"),
        Key("max_loss_rel_diff_vs_serial", "largest relative difference of the final training loss against the same "
                                           "problem trained on one process (null unless experiments.serial_training)"),
        Key("step_s", "{cell: seconds per training step}"),
        Key("bytes_per_step_per_process", "{cell: bytes sent per step per process, mean}"),
        Key("measured_growth", "{mode: time per step at the largest measured process count / at one process}"),
        Key("modelled_growth", "{mode: the same, modelled, at 2^modelled.max_exponent processes}"),
        Key("modelled_max_processes", "the largest modelled process count"),
        Key("fit", "{a_s, b_s_per_voxel, cells, cores}: the model's per-evaluation time a + b x voxels, fitted to "
                   "these cells (those with at most `cores` processes)"),
    ),
    REPORT,
    Output("cells.csv", "csv", "one row per cell: its grid and problem, measured time and bytes per step, halo bytes "
           "measured and analytic, the equality check, the loss beside serial training",
           keys=(_CELL, Key("mode", "serial, space, depth or spacetime"), Key("processes", "P = P_s x P_t"),
                 Key("p_s", "sub-volumes (space)"), Key("p_t", "layer groups (depth)"),
                 Key("volume", "global volume, D x H x W voxels"), Key("layers", "residual layers in all"),
                 Key("voxels_per_process", "voxels of one process's sub-volume"),
                 Key("layers_per_process", "layers of one process's group"),
                 Key("step_s", "seconds per training step: median over the timed steps of the slowest process"),
                 Key("bytes_per_step_per_process", "bytes sent per step per process (whole frames), mean"),
                 Key("bytes_per_step_max", "the same, the busiest process"),
                 Key("halo_bytes_per_step", "halo array bytes received per step, all processes"),
                 Key("halo_bytes_analytic", "the analytic halo volume per step: grown box clipped to the volume minus "
                                            "the block, x channels x batch x 4 bytes x exchanges"),
                 Key("halo_measured_over_analytic", "halo_bytes_per_step / halo_bytes_analytic (empty: no halos)"),
                 Key("mgrit_bytes_per_step", "MGRIT array bytes sent per step per process, mean"),
                 Key("check_iterations", "MGRIT iterations of the check reported here (its last)"),
                 Key("forward_rel_diff", "relative difference of the logits to the undecomposed network"),
                 Key("gradient_rel_diff", "largest relative difference of a parameter gradient"),
                 Key("loss", "training loss at the last step"),
                 Key("serial_loss", "the same problem trained on one process (empty for P = 1)"),
                 Key("loss_rel_diff_vs_serial", "|loss - serial_loss| / serial_loss"),
                 Key("modelled_step_s", "the cost model at this cell (fitted a, b; assumed network)"))),
    Output("weak_scaling.csv", "csv", "measured weak scaling: one row per process count, per mode the problem per "
           "process, seconds and bytes per step per process (the slides' slide 8 as a table)",
           keys=(Key("processes", "P"),) + tuple(
               Key(f"{m}_{col}", f"{meaning}, {m}", When(f"{m} is in experiments.modes",
                                                         lambda c, m=m: m in _cfg(c, "experiments.modes")))
               for m in ("space", "depth", "spacetime")
               for col, meaning in (("problem_per_process", "voxels and layers per process"),
                                    ("step_s", "seconds per training step"),
                                    ("bytes", "bytes sent per step per process")))),
    Output("modelled.csv", "csv", "MODELLED weak scaling to 2^modelled.max_exponent processes on "
           "modelled.cores_per_node-core nodes (jobs/spacetime_model.py), not measured",
           keys=(Key("processes", "P"), Key("nodes", "ceil(P / cores_per_node)")) + tuple(
               Key(f"{m}_{col}", f"modelled {meaning}, {m}", When(f"{m} is in experiments.modes",
                                                                  lambda c, m=m: m in _cfg(c, "experiments.modes")))
               for m in ("space", "depth", "spacetime")
               for col, meaning in (("step_s", "seconds per step"), ("bytes", "bytes per step per process")))),
    Output("convergence.csv", "csv", "per cell and MGRIT iteration count: the check against the undecomposed network "
           "and the residual norms",
           keys=(_CELL, Key("iteration", "MGRIT iterations"), Key("forward_rel_diff", "logits vs undecomposed"),
                 Key("gradient_rel_diff", "largest gradient difference vs undecomposed"),
                 Key("loss_rel_diff", "loss vs undecomposed"),
                 Key("forward_residual", "forward C-point residual norm after this iteration (empty: no MGRIT)"),
                 Key("adjoint_residual", "adjoint C-point residual norm after this iteration (empty: no MGRIT)"))),
    Output("training.csv", "csv", "loss per training step per cell, beside the same problem on one process",
           keys=(_CELL, Key("step", "training step (0: the untimed warm-up step)"),
                 Key("loss", "mean loss of the step"),
                 Key("serial_loss", "the one-process run's loss at that step (empty for P = 1 or without "
                                    "experiments.serial_training)"))),
    Output("weak_scaling.png", "png", "seconds per step against processes: measured (left), modelled (right)"),
    Output("mgrit_convergence.png", "png", "gradient difference to the undecomposed network per MGRIT iteration"),
    Output("training_loss.png", "png", "training loss per step per cell, dotted: on one process"),
    Output("results.json", "json", "everything the report is built from",
           keys=(Key("cells", "the rows of cells.csv"), Key("plan", "each cell's grid and problem"),
                 Key("weak_scaling", "the rows of weak_scaling.csv"), Key("modelled", "the rows of modelled.csv"),
                 Key("convergence", "the rows of convergence.csv"), Key("training", "the rows of training.csv"),
                 Key("fit", "as in summary.json"), Key("modes", "experiments.modes"), Key("mgrit", "the mgrit section"),
                 Key("modelled_config", "the modelled section"), Key("model", "{channels, kernel, batch}"),
                 Key("roles", "{role: {rank, address, mesh_s}}: seconds to connect the mesh"))),
)

SCHEMA: dict[str, tuple[Output, ...]] = {case: outputs + (HOSTS,) for case, outputs in (
    ("redshift", REDSHIFT), ("landcover", LANDCOVER), ("domst", DOMST), ("spacetime", SPACETIME))}


# ---------------------------------------------------------------- matching
def _pattern(path: str) -> re.Pattern:
    """'<run>/workers/<worker>' -> a regex where each placeholder is one path component."""
    parts = re.split(r"(<[^>]+>)", path)
    return re.compile("".join("[^/]+" if p.startswith("<") else re.escape(p) for p in parts) + r"\Z")


def _glob(path: str) -> str:
    return re.sub(r"<[^>]+>", "*", path)


def _required(when: When | None, config: dict | None) -> bool:
    if when is None:
        return True
    if when.test is None or config is None:
        return False
    try:
        return bool(when.test(config))
    except (KeyError, TypeError):
        return False


# ---------------------------------------------------------------- per-kind checks
def _check_keys(where: str, found, declared: tuple[Key, ...], config: dict | None, what: str) -> list[str]:
    names = {k.name for k in declared}
    problems = [f"{where}: missing {what} '{k.name}'" for k in declared
                if k.name not in found and _required(k.when, config)]
    problems += [f"{where}: {what} '{name}' is not declared in jobs/output_schema.py" for name in found
                 if name not in names]
    return problems


def _check_json(path: Path, out: Output, config: dict | None) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"{path}: not valid JSON ({exc})"]
    if not isinstance(data, dict):
        return [f"{path}: expected a JSON object, found {type(data).__name__}"]
    return _check_keys(str(path), list(data), out.keys, config, "key") if out.keys else []


def _check_yaml(path: Path, out: Output, config: dict | None) -> list[str]:
    import yaml
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [f"{path}: not valid YAML ({exc})"]
    if not isinstance(data, dict):
        return [f"{path}: expected a YAML mapping"]
    return _check_keys(str(path), list(data), out.keys, config, "key")


def _check_csv(path: Path, out: Output, config: dict | None) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [f"{path}: empty file, no header"]
    problems = _check_keys(str(path), rows[0], out.keys, config, "column")
    if len(rows) < 2:
        problems.append(f"{path}: header only, no rows")
    problems += [f"{path}: row {i} has {len(r)} cells, the header {len(rows[0])}" for i, r in
                 enumerate(rows[1:], start=2) if len(r) != len(rows[0])]
    return problems


def _check_png(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.read(len(PNG_SIGNATURE))
    return [] if head == PNG_SIGNATURE else [f"{path}: not a PNG file"]


def _records_schema(ref: str):
    import importlib
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _check_hdf5(path: Path, out: Output, config: dict | None) -> list[str]:
    import h5py
    import numpy as np
    if out.records:
        from rdd_io.schema import SchemaError
        try:
            _records_schema(out.records).read_h5(str(path), str(path))
        except SchemaError as exc:
            return [str(exc)]
        return []
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        return [f"{path}: not a readable HDF5 file ({exc})"]
    problems = _check_keys(str(path), list(h5.attrs), out.keys, config, "attribute") if out.keys else []
    with h5:
        nodes: dict[str, object] = {}
        h5.visititems(lambda name, node: nodes.update({name: node}))  # None: visit everything
        groups = [n for n, node in nodes.items() if isinstance(node, h5py.Group)]
        datasets = {n: node for n, node in nodes.items() if isinstance(node, h5py.Dataset)}
        declared = [(d, _pattern(d.path)) for d in out.datasets]
        for name, node in datasets.items():
            match = next((d for d, p in declared if p.match(name)), None)
            if match is None:
                problems.append(f"{path}: dataset '{name}' is not declared in jobs/output_schema.py")
                continue
            if node.dtype != np.dtype(match.dtype):
                problems.append(f"{path}: dataset '{name}' has dtype {node.dtype}, expected {match.dtype}")
            if node.ndim != len(match.shape):
                problems.append(f"{path}: dataset '{name}' has rank {node.ndim} (shape {node.shape}), expected "
                                f"rank {len(match.shape)} {match.shape}")
        for name in groups:  # a group no declared path passes through is unexpected
            if not any(_pattern(_prefix).match(name) for d in out.datasets + out.groups
                       for _prefix in _prefixes(d.path)):
                problems.append(f"{path}: group '{name}' is not declared in jobs/output_schema.py")
        # every component of a declared path exists under every group its parent matches
        for decl in out.datasets + out.groups:
            for parent, child in _steps(decl.path):
                parents = [""] if parent == "" else [g for g in groups if _pattern(parent).match(g)]
                for p in parents:
                    children = list(h5[p].keys()) if p else list(h5.keys())
                    if child.startswith("<") and not children:
                        problems.append(f"{path}: group '/{p}' is empty, expected {child} under it")
                    elif not child.startswith("<") and child not in children:
                        problems.append(f"{path}: '/{p + '/' if p else ''}{child}' is missing")
        for g in out.groups:
            pattern = _pattern(g.path)
            for name in groups:
                if pattern.match(name):
                    problems += _check_keys(f"{path}:/{name}", list(h5[name].attrs), g.attrs, config, "attribute")
    return sorted(set(problems), key=problems.index)


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _steps(path: str) -> list[tuple[str, str]]:
    """'<run>/updates/tau' -> [('', '<run>'), ('<run>', 'updates'), ('<run>/updates', 'tau')]."""
    parts = path.split("/")
    return [("/".join(parts[:i]), parts[i]) for i in range(len(parts))]


def _check_file(path: Path, out: Output, config: dict | None) -> list[str]:
    if out.kind == "folder":
        return [] if path.is_dir() and any(path.iterdir()) else [f"{path}: expected a non-empty folder"]
    if not path.is_file():
        return [f"{path}: expected a file"]
    if path.stat().st_size == 0:
        return [f"{path}: empty file"]
    check = {"json": _check_json, "yaml": _check_yaml, "csv": _check_csv, "hdf5": _check_hdf5}.get(out.kind)
    if check is not None:
        return check(path, out, config)
    if out.kind == "png":
        return _check_png(path)
    if out.kind == "markdown":
        return [] if path.read_text(encoding="utf-8").strip() else [f"{path}: no text"]
    return []


def _matches(root: Path, out: Output) -> list[Path]:
    pattern = _pattern(out.path.rstrip("/"))
    return sorted(p for p in root.glob(_glob(out.path.rstrip("/"))) if pattern.match(p.relative_to(root).as_posix())
                  and not p.name.startswith("."))


def check(case: str, output_dir: str | Path) -> list[str]:
    """Problems of a run's output folder against the schema of `case` (empty: it matches)."""
    if case not in SCHEMA:
        raise ValueError(f"unknown case {case!r}; one of {list(SCHEMA)}")
    return check_outputs(SCHEMA[case], output_dir, case)


def check_outputs(outputs: tuple[Output, ...], output_dir: str | Path, case: str) -> list[str]:
    """Problems of an output folder against the declared `outputs` of `case`."""
    import yaml
    root = Path(output_dir)
    if not root.is_dir():
        return [f"{root}: no such folder"]
    problems, config = [], None
    try:
        config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        pass  # reported below as a missing or invalid config.yaml
    try:
        summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
        if summary.get("status") != "ok":
            problems.append(f"{root / 'summary.json'}: status {summary.get('status')!r} "
                            f"({summary.get('error', 'no error recorded')})")
        if summary.get("case") not in (None, case):
            problems.append(f"{root / 'summary.json'}: case {summary.get('case')!r}, expected {case!r}")
    except (OSError, ValueError):
        pass
    for out in outputs:
        found = _matches(root, out)
        if not found and _required(out.when, config):
            problems.append(f"{root}: missing {out.path} ({out.meaning.split(';')[0]})")
        checked = found[:MAX_RECORD_FILES] if out.records else found
        for path in checked:
            problems += _check_file(path, out, config)
    tops = {out.path.split("/")[0] for out in outputs}
    for entry in sorted(root.iterdir()):
        if not any(fnmatch.fnmatchcase(entry.name, _glob(t)) for t in tops):
            problems.append(f"{entry}: not declared in jobs/output_schema.py (a leftover temporary, or an output "
                            f"to declare there)")
    return problems


# ---------------------------------------------------------------- Markdown rendering
TITLES = {"redshift": "Redshift (jobs/redshift.py)", "landcover": "Land cover (jobs/landcover.py)",
          "domst": "Dom-ST (jobs/domst.py)", "spacetime": "Space-time parallelism (jobs/spacetime.py)"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _when(when: When | None) -> str:
    return "always" if when is None else when.text


def _keys_table(keys: tuple[Key, ...], what: str) -> list[str]:
    lines = [f"| {what} | meaning | present |", "|---|---|---|"]
    return lines + [f"| `{_cell(k.name)}` | {_cell(k.meaning)} | {_cell(_when(k.when))} |" for k in keys] + [""]


def _records_lines(ref: str) -> list[str]:
    schema = _records_schema(ref)
    lines = [f"Written with the record schema `{schema.name}` (`{ref}`); first axis N = records.", "",
             "| dataset | dtype | shape |", "|---|---|---|"]
    for f in schema.fields:
        shape = ", ".join("N" if d is None else str(d) for d in f.shape)
        lines.append(f"| `{f.name}` | {f.dtype} | ({shape}{',' if len(f.shape) == 1 else ''}) |")
    return lines + [""]


def render() -> str:
    """docs/OUTPUTS.md."""
    out = ["# Outputs", "",
           "<!-- Generated by `python -m jobs.output_schema > docs/OUTPUTS.md` from jobs/output_schema.py; "
           "edit that file, not this one. -->", "",
           "Every file a case study writes under its output URI (`--output`, default `outputs/<case>`). "
           "`jobs.output_schema.check(case, folder)` checks a run's folder against this; "
           "`python -m jobs.outputs_report outputs --html outputs/report.html` turns an output root into one "
           "HTML report, and `notebooks/inspect_outputs.ipynb` shows the same tables and figures.", "",
           "Placeholders such as `<run>` stand for one path component. *present*: when the file exists "
           "(*always*: every successful run writes it).", ""]
    for case, outputs in SCHEMA.items():
        out += [f"## {TITLES[case]}", "", "| path | kind | present | meaning |", "|---|---|---|---|"]
        out += [f"| `{o.path}` | {o.kind} | {_cell(_when(o.when))} | {_cell(o.meaning)} |" for o in outputs]
        out.append("")
        for o in outputs:
            if not (o.keys or o.groups or o.datasets or o.records):
                continue
            out += [f"### {case}: `{o.path}`", ""]
            if o.records:
                out += _records_lines(o.records)
            if o.keys:
                what = {"csv": "column", "hdf5": "root attribute"}.get(o.kind, "key")
                out += _keys_table(o.keys, what)
            for g in o.groups:
                out += [f"Group `{g.path}`: {g.meaning}.", ""]
                if g.attrs:
                    out += _keys_table(g.attrs, "attribute")
            if o.datasets:
                out += ["| dataset | dtype | shape | meaning |", "|---|---|---|---|"]
                out += [f"| `{d.path}` | {d.dtype} | ({', '.join(map(str, d.shape))}"
                        f"{',' if len(d.shape) == 1 else ''}) | {_cell(d.meaning)} |" for d in o.datasets]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print docs/OUTPUTS.md; with `--check <case> <folder>`, print the folder's problems instead."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--check"] and len(args) == 3:
        problems = check(args[1], args[2])
        print("\n".join(problems) or f"{args[2]}: matches the {args[1]} schema")
        return 1 if problems else 0
    if args:
        print("usage: python -m jobs.output_schema [--check <case> <folder>]", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
