/**
 * The live model behind the sidebar and the status bar: backends, credentials, jobs, runs,
 * pipelines, budgets and dashboards, kept fresh by the server's `job_status` and
 * `pipeline_status` events (pushed over the server's event bus) and by a poll that backs off
 * when the server fails.
 */
import { Event } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { QmlopsApiError, QmlopsClient } from './api';
import {
  IBackendInfo,
  IBudgetStatus,
  ICredentialInfo,
  ICredentialRequest,
  ICredentialTest,
  IDashboardLink,
  IJobFilter,
  IJobRecord,
  IJobStatus,
  IPipeline,
  IPipelineRun,
  IPipelineStatus,
  IQmlopsModel,
  IResource,
  IRun,
  JOB_STATUS_SCHEMA,
  PIPELINE_STATUS_SCHEMA,
  PIPELINE_TERMINAL_STATES,
  TERMINAL_STATES
} from './tokens';

/** A Bell pair in OpenQASM 3: the test job the sidebar submits. */
export const BELL_QASM3 = `OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
`;

/** How many jobs the list shows at first, and how many more each "Show older jobs" adds. */
export const JOB_LIMIT = 50;
/** The longest the poll waits between tries while the server fails (ms). */
export const MAX_BACKOFF = 5 * 60 * 1000;
/** The most the jobs route answers at once. */
export const MAX_JOBS = 1000;
/** How many recent pipeline runs the model keeps. */
export const PIPELINE_RUN_LIMIT = 20;

export interface IModelOptions {
  client: QmlopsClient;
  /** The server's event bus (JupyterLab's `serviceManager.events`); null: poll only. */
  events?: Event.IManager | null;
  /** Seconds between polls while the server answers (the settings' refreshInterval). */
  refreshInterval?: number;
  /** Start polling at once (default true; tests drive the model by hand). */
  autoStart?: boolean;
}

function resource<T>(data: T): IResource<T> {
  return { status: 'idle', data, error: null };
}

/** One line of what went wrong, for an error state. */
export function describeError(error: unknown): string {
  if (error instanceof QmlopsApiError) {
    return error.message;
  }
  return (error as Error)?.message ?? String(error);
}

/** A pushed event's data if it is a job_status event of the qmlops schema. */
export function asJobStatus(emission: Event.Emission | Record<string, unknown>): IJobStatus | null {
  const raw = emission as Record<string, unknown>;
  const schema = raw.schema_id ?? raw.__schema__;
  if (schema !== JOB_STATUS_SCHEMA || typeof raw.job_id !== 'string') {
    return null;
  }
  return raw as unknown as IJobStatus;
}

/** A pushed event's data if it is a pipeline_status event of the qmlops schema. */
export function asPipelineStatus(
  emission: Event.Emission | Record<string, unknown>
): IPipelineStatus | null {
  const raw = emission as Record<string, unknown>;
  const schema = raw.schema_id ?? raw.__schema__;
  if (
    schema !== PIPELINE_STATUS_SCHEMA ||
    typeof raw.run_id !== 'string' ||
    typeof raw.new_state !== 'string'
  ) {
    return null;
  }
  return raw as unknown as IPipelineStatus;
}

export class QmlopsModel implements IQmlopsModel {
  constructor(options: IModelOptions) {
    this.client = options.client;
    this._eventManager = options.events ?? null;
    this._refreshInterval = Math.max(1, options.refreshInterval ?? 10);
    if (this._eventManager) {
      this._eventManager.stream.connect(this._onEmission, this);
    }
    this._poll = new Poll({
      auto: options.autoStart ?? true,
      factory: () => this._tick(),
      frequency: {
        interval: this._refreshInterval * 1000,
        backoff: true,
        max: Math.max(MAX_BACKOFF, this._refreshInterval * 1000)
      },
      name: 'qmlops-jupyter:model',
      standby: 'when-hidden'
    });
  }

  readonly client: QmlopsClient;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** A job's record changed (an event, a refresh, a cancel). */
  get jobChanged(): ISignal<this, IJobRecord> {
    return this._jobChanged;
  }

  get backends(): IResource<IBackendInfo[]> {
    return this._backends;
  }
  get credentials(): IResource<ICredentialInfo[]> {
    return this._credentials;
  }
  get jobs(): IResource<IJobRecord[]> {
    return this._jobs;
  }
  get runs(): IResource<IRun[]> {
    return this._runs;
  }
  get budget(): IResource<IBudgetStatus[]> {
    return this._budget;
  }
  get pipelines(): IResource<IPipeline[]> {
    return this._pipelines;
  }
  get pipelineRuns(): IResource<IPipelineRun[]> {
    return this._pipelineRuns;
  }
  get dashboards(): IResource<IDashboardLink[]> {
    return this._dashboards;
  }
  get dashboardsHint(): string | null {
    return this._dashboardsHint;
  }
  get filter(): IJobFilter {
    return { ...this._filter };
  }
  get live(): boolean {
    return this._eventManager !== null;
  }
  get poll(): Poll {
    return this._poll;
  }
  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get runningCount(): number {
    return this._active.size;
  }

  get budgetUse(): number | null {
    let most: number | null = null;
    for (const budget of this._budget.data) {
      for (const limit of [budget.shots_per_day, budget.usd_per_month]) {
        if (limit && limit.limit > 0) {
          const share = limit.used / limit.limit;
          most = most === null ? share : Math.max(most, share);
        } else if (limit && limit.limit === 0) {
          most = Math.max(most ?? 0, limit.used > 0 ? 1 : 0);
        }
      }
    }
    return most;
  }

  /** Seconds between polls. */
  set refreshInterval(seconds: number) {
    this._refreshInterval = Math.max(1, seconds);
    const interval = this._refreshInterval * 1000;
    // The backoff ceiling is 5 minutes, or the interval itself when that is longer.
    this._poll.frequency = {
      ...this._poll.frequency,
      interval,
      max: Math.max(MAX_BACKOFF, interval)
    };
  }

  setFilter(filter: Partial<IJobFilter>): void {
    this._filter = { ...this._filter, ...filter };
    this._changed.emit();
    void this.refreshJobs().catch(() => undefined); // the error shows in the jobs section
  }

  /** Everything, at once. */
  async refresh(): Promise<void> {
    const [, jobs] = await Promise.allSettled([
      this.refreshBackends(),
      this.refreshJobs(),
      this.refreshRuns(),
      this.refreshBudget(),
      this.refreshPipelines(),
      this.refreshDashboards()
    ]);
    if (jobs.status === 'rejected') {
      throw jobs.reason; // every part has settled; the jobs list's failure is the caller's
    }
  }

  /** Whether older jobs than those listed exist. */
  get hasMoreJobs(): boolean {
    return this._hasMoreJobs;
  }

  /** List another page of older jobs (up to the API's 1000). */
  loadMoreJobs(): Promise<void> {
    this._jobsLimit = Math.min(MAX_JOBS, this._jobsLimit + JOB_LIMIT);
    return this.refreshJobs();
  }

  async refreshJobs(): Promise<void> {
    const filter = { ...this._filter };
    const ticket = ++this._jobsTicket;
    this._jobs = { ...this._jobs, status: this._jobs.status === 'ready' ? 'ready' : 'loading' };
    this._changed.emit();
    try {
      const page = await this.client.jobs({
        state: filter.state,
        backend: filter.backend,
        limit: this._jobsLimit
      });
      if (ticket !== this._jobsTicket) {
        return; // a newer refresh (another filter) answers instead
      }
      for (const job of page.jobs) {
        this._track(job);
      }
      this._jobs = { status: 'ready', data: page.jobs, error: null };
      this._hasMoreJobs = page.next !== null;
      if (!this.live) {
        void this._reconcileActive(); // without events, a hidden job's end is seen only so
      }
    } catch (error) {
      if (ticket === this._jobsTicket) {
        this._jobs = { ...this._jobs, status: 'error', error: describeError(error) };
      }
      throw error;
    } finally {
      this._changed.emit();
    }
  }

  /** Backends and the stored credentials (the credential status of a backend needs both). */
  async refreshBackends(): Promise<void> {
    this._backends = {
      ...this._backends,
      status: this._backends.status === 'ready' ? 'ready' : 'loading'
    };
    this._changed.emit();
    const [backends, credentials] = await Promise.allSettled([
      this.client.backends(),
      this.client.credentials()
    ]);
    this._backends =
      backends.status === 'fulfilled'
        ? { status: 'ready', data: backends.value, error: null }
        : { ...this._backends, status: 'error', error: describeError(backends.reason) };
    this._credentials =
      credentials.status === 'fulfilled'
        ? { status: 'ready', data: credentials.value, error: null }
        : { ...this._credentials, status: 'error', error: describeError(credentials.reason) };
    this._changed.emit();
  }

  async refreshRuns(): Promise<void> {
    this._runs = { ...this._runs, status: this._runs.status === 'ready' ? 'ready' : 'loading' };
    this._runsLoading = true;
    this._changed.emit();
    try {
      this._runs = { status: 'ready', data: await this.client.runs(20), error: null };
    } catch (error) {
      this._runs = { ...this._runs, status: 'error', error: describeError(error) };
    } finally {
      this._runsLoading = false;
      this._changed.emit();
    }
  }

  async refreshBudget(): Promise<void> {
    this._budget = {
      ...this._budget,
      status: this._budget.status === 'ready' ? 'ready' : 'loading'
    };
    this._changed.emit();
    try {
      this._budget = { status: 'ready', data: await this.client.budget(), error: null };
    } catch (error) {
      this._budget = { ...this._budget, status: 'error', error: describeError(error) };
    } finally {
      this._changed.emit();
    }
  }

  /**
   * The dashboards and their Voila links (never throws: a failure shows in the section). What
   * links exist changes only with the server's set-up, so it is read at start and on a refresh,
   * not on every poll.
   */
  async refreshDashboards(): Promise<void> {
    this._dashboards = {
      ...this._dashboards,
      status: this._dashboards.status === 'ready' ? 'ready' : 'loading'
    };
    this._changed.emit();
    try {
      const answer = await this.client.dashboards();
      this._dashboards = { status: 'ready', data: answer.dashboards, error: null };
      this._dashboardsHint = answer.hint;
    } catch (error) {
      this._dashboards = { ...this._dashboards, status: 'error', error: describeError(error) };
    } finally {
      this._changed.emit();
    }
  }

  /**
   * Saved pipelines and recent pipeline runs, read again (never throws: a failure shows in the
   * section). Calls while one is on its way make one more read after it, not one each.
   */
  refreshPipelines(): Promise<void> {
    if (this._pipelinesLoading) {
      this._pipelinesAgain = true;
      return this._pipelinesLoading;
    }
    this._pipelinesLoading = this._loadPipelines().finally(() => {
      this._pipelinesLoading = null;
      if (this._pipelinesAgain && !this._isDisposed) {
        this._pipelinesAgain = false;
        return this.refreshPipelines();
      }
    });
    return this._pipelinesLoading;
  }

  async pausePipeline(nameOrId: string): Promise<IPipeline> {
    const pipeline = await this.client.pausePipeline(nameOrId);
    this._upsertPipeline(pipeline);
    return pipeline;
  }

  async resumePipeline(nameOrId: string): Promise<IPipeline> {
    const pipeline = await this.client.resumePipeline(nameOrId);
    this._upsertPipeline(pipeline);
    return pipeline;
  }

  async deletePipeline(nameOrId: string): Promise<void> {
    await this.client.deletePipeline(nameOrId);
    this._pipelines = {
      ...this._pipelines,
      data: this._pipelines.data.filter(p => p.name !== nameOrId && p.id !== nameOrId)
    };
    this._changed.emit();
  }

  async runPipelineNow(nameOrId: string): Promise<IPipelineRun> {
    const run = await this.client.runPipeline(nameOrId);
    this._upsertPipelineRun(run);
    void this.refreshPipelines();
    return run;
  }

  /**
   * Apply one `pipeline_status` event: a listed run's state (error, MLflow run) changes in
   * place at once (a finished run never goes back, an older event never wins), then the lists
   * are read again for what an event does not carry (a new run, its duration, the next due
   * time).
   */
  handlePipelineEvent(event: IPipelineStatus): void {
    const seen = this._pipelineEventTime.get(event.run_id);
    const time = Date.parse(event.time);
    if (seen !== undefined && !isNaN(time) && time < seen) {
      return;
    }
    if (!isNaN(time)) {
      this._pipelineEventTime.set(event.run_id, time);
    }
    const apply = (run: IPipelineRun): IPipelineRun => {
      if (run.state !== event.new_state && PIPELINE_TERMINAL_STATES.has(run.state)) {
        return run;
      }
      const next = {
        ...run,
        state: event.new_state,
        error: event.error ?? run.error,
        error_cell: event.error_cell ?? run.error_cell,
        mlflow_run_id: event.mlflow_run_id ?? run.mlflow_run_id
      };
      const same =
        next.state === run.state &&
        next.error === run.error &&
        next.error_cell === run.error_cell &&
        next.mlflow_run_id === run.mlflow_run_id;
      return same ? run : next;
    };
    let changed = false;
    const runs = this._pipelineRuns.data.map(run => {
      if (run.id !== event.run_id) {
        return run;
      }
      const next = apply(run);
      changed = changed || next !== run;
      return next;
    });
    const pipelines = this._pipelines.data.map(pipeline => {
      if (!pipeline.last_run || pipeline.last_run.id !== event.run_id) {
        return pipeline;
      }
      const next = apply(pipeline.last_run);
      if (next === pipeline.last_run) {
        return pipeline;
      }
      changed = true;
      return { ...pipeline, last_run: next };
    });
    if (changed) {
      this._pipelineRuns = { ...this._pipelineRuns, data: runs };
      this._pipelines = { ...this._pipelines, data: pipelines };
      this._changed.emit();
    }
    void this.refreshPipelines();
  }

  async cancelJob(id: string): Promise<IJobRecord> {
    const job = await this.client.cancel(id);
    this._upsert(job);
    return job;
  }

  async saveCredential(alias: string, request: ICredentialRequest): Promise<ICredentialInfo> {
    const info = await this.client.putCredential(alias, request);
    await this.refreshBackends();
    return info;
  }

  async deleteCredential(alias: string): Promise<void> {
    await this.client.deleteCredential(alias);
    await this.refreshBackends();
  }

  testCredential(alias: string): Promise<ICredentialTest> {
    return this.client.testCredential(alias);
  }

  /** A Bell pair on `backend`, to see a backend work end to end. */
  async submitTestJob(backend: string): Promise<IJobRecord> {
    const job = await this.client.submit({
      backend,
      circuits: [BELL_QASM3],
      shots: 1024,
      name: 'bell-test'
    });
    this._upsert(job);
    return job;
  }

  /**
   * Apply one `job_status` event: the job's state changes in place at once; a job not yet in the
   * list, or one that has just finished (its result, cost and run appear), is read again.
   */
  handleEvent(event: IJobStatus): void {
    const known = this._seq.get(event.job_id) ?? -1;
    if (event.seq <= known) {
      return; // already applied, or older than what is shown
    }
    this._seq.set(event.job_id, event.seq);
    this._lastEvent.set(event.job_id, event);
    if (TERMINAL_STATES.has(event.new_state)) {
      this._active.delete(event.job_id);
    } else {
      this._active.add(event.job_id);
    }
    const index = this._jobs.data.findIndex(job => job.id === event.job_id);
    const listed = index >= 0 ? this._jobs.data[index] : null;
    if (listed && TERMINAL_STATES.has(listed.state) && !TERMINAL_STATES.has(event.new_state)) {
      // A late event of a job already shown finished: terminal states never change.
      this._active.delete(event.job_id);
      return;
    }
    if (listed) {
      const job = { ...listed, state: event.new_state, updated_at: event.time };
      const data = this._jobs.data.slice();
      if (this._matches(job)) {
        data[index] = job;
      } else {
        data.splice(index, 1); // it has left the state filter
      }
      this._jobs = { ...this._jobs, data };
      this._jobChanged.emit(job);
      this._changed.emit();
    }
    if (index < 0 || TERMINAL_STATES.has(event.new_state) || event.new_state === 'QUEUED') {
      void this._reload(event.job_id);
    }
    if (TERMINAL_STATES.has(event.new_state)) {
      this._budgetStale = true;
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    if (this._eventManager) {
      this._eventManager.stream.disconnect(this._onEmission, this);
    }
    Signal.clearData(this);
  }

  private _onEmission(_: Event.IManager, emission: Event.Emission): void {
    const event = asJobStatus(emission);
    if (event) {
      this.handleEvent(event);
      return;
    }
    const pipelineEvent = asPipelineStatus(emission);
    if (pipelineEvent) {
      this.handlePipelineEvent(pipelineEvent);
    }
  }

  private async _loadPipelines(): Promise<void> {
    const loading = <T>(resource: IResource<T[]>): IResource<T[]> => ({
      ...resource,
      status: resource.status === 'ready' ? 'ready' : 'loading'
    });
    this._pipelines = loading(this._pipelines);
    this._pipelineRuns = loading(this._pipelineRuns);
    this._changed.emit();
    const [pipelines, runs] = await Promise.allSettled([
      this.client.pipelines(),
      this.client.pipelineRuns({ limit: PIPELINE_RUN_LIMIT })
    ]);
    this._pipelines =
      pipelines.status === 'fulfilled'
        ? { status: 'ready', data: pipelines.value, error: null }
        : { ...this._pipelines, status: 'error', error: describeError(pipelines.reason) };
    this._pipelineRuns =
      runs.status === 'fulfilled'
        ? { status: 'ready', data: runs.value.pipeline_runs, error: null }
        : { ...this._pipelineRuns, status: 'error', error: describeError(runs.reason) };
    this._changed.emit();
  }

  private _upsertPipeline(pipeline: IPipeline): void {
    const data = this._pipelines.data.filter(p => p.id !== pipeline.id);
    data.push(pipeline);
    data.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this._pipelines = { ...this._pipelines, data };
    this._changed.emit();
  }

  private _upsertPipelineRun(run: IPipelineRun): void {
    const data = this._pipelineRuns.data.filter(r => r.id !== run.id);
    data.push(run);
    data.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    this._pipelineRuns = { ...this._pipelineRuns, data: data.slice(0, PIPELINE_RUN_LIMIT) };
    this._changed.emit();
  }

  /** One poll: the jobs list (its failure backs the poll off), and the slower parts. */
  private async _tick(): Promise<void> {
    if (this._isDisposed) {
      return;
    }
    this._ticks += 1;
    const slow = this._ticks === 1 || this._ticks % 3 === 0;
    const tasks: Promise<void>[] = [this.refreshJobs()];
    if (slow) {
      tasks.push(this.refreshBackends(), this.refreshRuns());
    }
    // Without events, or while a run is unfinished (its events could be missed), every tick.
    const unfinished = this._pipelineRuns.data.some(r => !PIPELINE_TERMINAL_STATES.has(r.state));
    if (slow || !this.live || unfinished) {
      tasks.push(this.refreshPipelines());
    }
    if (slow || this._budgetStale) {
      this._budgetStale = false;
      tasks.push(this.refreshBudget());
    }
    if (this._ticks === 1) {
      tasks.push(this.refreshDashboards());
    }
    await Promise.all(tasks);
  }

  /**
   * Polling only: jobs counted as running that the list does not show (a filter hides them, or
   * they are older than its page) are read again, so one that finished unseen stops being
   * counted. With events, every change arrives anyway.
   */
  private async _reconcileActive(): Promise<void> {
    const listed = new Set(this._jobs.data.map(job => job.id));
    const hidden = Array.from(this._active).filter(id => !listed.has(id));
    await Promise.all(
      hidden.slice(0, 20).map(async id => {
        try {
          this._track(await this.client.job(id));
        } catch (error) {
          if (error instanceof QmlopsApiError && error.status === 404) {
            this._active.delete(id);
          }
        }
      })
    );
    if (hidden.length) {
      this._changed.emit();
    }
  }

  /** Read one job again and put it in the list where it belongs. */
  private async _reload(id: string): Promise<void> {
    if (this._reloading.has(id)) {
      this._reloadAgain.add(id);
      return;
    }
    this._reloading.add(id);
    try {
      const job = await this.client.job(id);
      const latest = this._lastEvent.get(id);
      // An event that arrived while the record was on its way is newer than the record.
      if (
        latest &&
        latest.new_state !== job.state &&
        !TERMINAL_STATES.has(job.state) &&
        Date.parse(latest.time) > Date.parse(job.updated_at)
      ) {
        job.state = latest.new_state;
      }
      this._upsert(job);
      if (
        job.mlflow_run_id &&
        !this._runsLoading &&
        !this._runs.data.some(run => run.run_id === job.mlflow_run_id)
      ) {
        void this.refreshRuns(); // the job's run is new: show it
      }
    } catch {
      // The next poll shows it; an event never breaks the list.
    } finally {
      this._reloading.delete(id);
      if (this._reloadAgain.delete(id)) {
        void this._reload(id);
      }
    }
  }

  private _matches(job: IJobRecord): boolean {
    return (
      (!this._filter.state || job.state === this._filter.state) &&
      (!this._filter.backend || job.backend === this._filter.backend)
    );
  }

  private _track(job: IJobRecord): void {
    if (TERMINAL_STATES.has(job.state)) {
      this._active.delete(job.id);
    } else {
      this._active.add(job.id);
    }
  }

  /** Insert or replace a job in the list (newest first), if it passes the filter. */
  private _upsert(job: IJobRecord): void {
    this._track(job);
    const data = this._jobs.data.filter(existing => existing.id !== job.id);
    if (this._matches(job)) {
      data.push(job);
      data.sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
    }
    this._jobs = {
      status: this._jobs.status === 'error' ? 'error' : 'ready',
      data: data.slice(0, this._jobsLimit),
      error: this._jobs.error
    };
    this._jobChanged.emit(job);
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _jobChanged = new Signal<this, IJobRecord>(this);
  private _backends = resource<IBackendInfo[]>([]);
  private _credentials = resource<ICredentialInfo[]>([]);
  private _jobs = resource<IJobRecord[]>([]);
  private _runs = resource<IRun[]>([]);
  private _budget = resource<IBudgetStatus[]>([]);
  private _pipelines = resource<IPipeline[]>([]);
  private _pipelineRuns = resource<IPipelineRun[]>([]);
  private _dashboards = resource<IDashboardLink[]>([]);
  private _dashboardsHint: string | null = null;
  private _pipelinesLoading: Promise<void> | null = null;
  private _pipelinesAgain = false;
  private _pipelineEventTime = new Map<string, number>();
  private _filter: IJobFilter = { state: '', backend: '' };
  private _active = new Set<string>();
  private _seq = new Map<string, number>();
  private _lastEvent = new Map<string, IJobStatus>();
  private _reloading = new Set<string>();
  private _reloadAgain = new Set<string>();
  private _eventManager: Event.IManager | null;
  private _refreshInterval: number;
  private _poll: Poll;
  private _jobsTicket = 0;
  private _jobsLimit = JOB_LIMIT;
  private _hasMoreJobs = false;
  private _ticks = 0;
  private _budgetStale = false;
  private _runsLoading = false;
  private _isDisposed = false;
}
