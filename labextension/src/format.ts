/** How times, durations and prices read in the sidebar. */
import { IJobRecord, TERMINAL_STATES } from './tokens';

/** "850 ms", "12 s", "3 m 05 s", "2 h 10 m", "3 d 4 h". */
export function formatDuration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) {
    return '–';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${Math.floor(seconds)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} m ${String(Math.floor(seconds % 60)).padStart(2, '0')} s`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours} h ${String(minutes % 60).padStart(2, '0')} m`;
  }
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function parse(time: string | null | undefined): number | null {
  if (!time) {
    return null;
  }
  // The server writes UTC; a time without a zone is UTC too.
  const value = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(time) ? time : `${time}Z`);
  return isNaN(value) ? null : value;
}

/** Seconds since the job was created, up to now or to its end. */
export function elapsedSeconds(job: IJobRecord, now: number = Date.now()): number {
  const start = parse(job.created_at);
  if (start === null) {
    return NaN;
  }
  const end = TERMINAL_STATES.has(job.state)
    ? (parse(job.finished_at) ?? parse(job.updated_at) ?? now)
    : now;
  return Math.max(0, (end - start) / 1000);
}

/** Seconds the job has waited in a provider's queue (so far). */
export function queuedSeconds(job: IJobRecord, now: number = Date.now()): number | null {
  if (job.state !== 'QUEUED') {
    return null;
  }
  const since = parse(job.submitted_at) ?? parse(job.updated_at);
  return since === null ? null : Math.max(0, (now - since) / 1000);
}

/** "$0.30", "$0.0042", "free"; null: unknown. */
export function formatUsd(usd: number | null | undefined): string | null {
  if (usd === null || usd === undefined || !isFinite(usd)) {
    return null;
  }
  if (usd === 0) {
    return 'free';
  }
  return usd >= 0.01 ? `$${usd.toFixed(2)}` : `$${usd.toPrecision(2)}`;
}

/** The job's price: what the provider charged, else the estimate (marked "~"). */
export function jobCost(job: IJobRecord): string | null {
  const actual = formatUsd(job.actual_cost_usd);
  if (actual !== null) {
    return actual;
  }
  if (job.state === 'CANCELLED' || job.state === 'FAILED') {
    return null; // the estimate of a job that did not run would read as a charge
  }
  const estimate = formatUsd(job.estimated_cost_usd);
  return estimate === null || estimate === 'free' ? estimate : `~${estimate}`;
}

/** A local date and time, short. */
export function formatTime(time: string | null | undefined): string {
  const value = parse(time);
  return value === null ? '–' : new Date(value).toLocaleString();
}

/** "12 s ago", "3 m ago", or a date. */
export function formatAgo(time: string | null | undefined, now: number = Date.now()): string {
  const value = parse(time);
  if (value === null) {
    return '–';
  }
  const seconds = (now - value) / 1000;
  return seconds < 48 * 3600
    ? `${formatDuration(Math.max(seconds, 1)).split(' ').slice(0, 2).join(' ')} ago`
    : new Date(value).toLocaleDateString();
}

/** Seconds from now until `time` (negative once it has passed); null: no time. */
export function secondsUntil(
  time: string | null | undefined,
  now: number = Date.now()
): number | null {
  const value = parse(time);
  return value === null ? null : (value - now) / 1000;
}

/** The file name of a path ("/a/b/nightly.ipynb" → "nightly.ipynb"). */
export function baseName(path: string): string {
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1] || path;
}

/** Seconds a pipeline run has taken: its duration, or the time since it started if unfinished. */
export function pipelineRunSeconds(
  run: { duration_s: number | null; started_at: string | null; state: string },
  now: number = Date.now()
): number | null {
  if (run.duration_s !== null && run.duration_s !== undefined) {
    return run.duration_s;
  }
  const started = parse(run.started_at);
  if (started === null || (run.state !== 'RUNNING' && run.state !== 'PARKED')) {
    return null;
  }
  return Math.max(0, (now - started) / 1000);
}

/** A number with at most `digits` significant digits. */
export function formatNumber(value: number, digits = 4): string {
  if (Number.isInteger(value)) {
    return value.toLocaleString();
  }
  return Number(value.toPrecision(digits)).toString();
}

/** A short job id, as the CLI shows it. */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/**
 * How long a QUEUED job may still wait: the median queue time of recent completed jobs on the
 * same backend (at least three of them), less the time it has waited so far. Null when there
 * is too little history, or the job is not queued.
 */
export function queueEta(
  job: IJobRecord,
  recent: readonly IJobRecord[],
  now: number = Date.now()
): { seconds: number; samples: number } | null {
  const waited = queuedSeconds(job, now);
  if (waited === null) {
    return null;
  }
  const times = recent
    .filter(other => other.backend === job.backend && other.state === 'COMPLETED')
    .map(other => other.phases?.queue)
    .filter((value): value is number => typeof value === 'number' && isFinite(value))
    .sort((a, b) => a - b);
  if (times.length < 3) {
    return null;
  }
  const middle = Math.floor(times.length / 2);
  const median = times.length % 2 ? times[middle] : (times[middle - 1] + times[middle]) / 2;
  return { seconds: Math.max(0, median - waited), samples: times.length };
}
