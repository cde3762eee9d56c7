/**
 * The models of the qmlops REST API (`/qmlops/api/v1/`), mirroring the server's pydantic
 * models (qmlops_jupyter/models.py and qmlops_jupyter/server/openapi.json), and the tokens other
 * plugins require.
 */
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';
import type { TranslationBundle } from '@jupyterlab/translation';
import type { QmlopsClient } from './api';

/** A job's state; terminal ones never change. */
export type JobState =
  | 'CREATED'
  | 'SUBMITTING'
  | 'QUEUED'
  | 'RUNNING'
  | 'CANCELLING'
  | 'NEEDS_ATTENTION'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLED';

export const JOB_STATES: JobState[] = [
  'CREATED',
  'SUBMITTING',
  'QUEUED',
  'RUNNING',
  'CANCELLING',
  'NEEDS_ATTENTION',
  'COMPLETED',
  'FAILED',
  'CANCELLED'
];

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set<JobState>([
  'COMPLETED',
  'FAILED',
  'CANCELLED'
]);

/** States in which a job can still be cancelled. */
export const CANCELLABLE_STATES: ReadonlySet<JobState> = new Set<JobState>([
  'CREATED',
  'SUBMITTING',
  'QUEUED',
  'RUNNING',
  'NEEDS_ATTENTION'
]);

/** What is known of one circuit of a job, without loading it. */
export interface ICircuitInfo {
  index: number;
  name: string | null;
  num_qubits: number;
  num_clbits: number;
  depth: number;
  size: number;
  gate_counts: Record<string, number>;
  source_format: string;
}

/** Counts per circuit, keys in Qiskit's bit order (classical bit 0 is rightmost). */
export interface IJobResult {
  counts: Record<string, number>[];
  shots: number;
  metadata: Record<string, unknown>;
  expectation_values?: number[] | null;
}

/** A job as the ledger holds it (`qmlops show --json`). */
export interface IJobRecord {
  id: string;
  owner: string;
  name: string | null;
  backend: string;
  state: JobState;
  shots: number;
  created_at: string;
  updated_at: string;
  submitted_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  provider_job_id: string | null;
  error: string | null;
  error_kind: string | null;
  idempotency_key: string | null;
  attempts: number;
  polls: number;
  queue_position: number | null;
  timeout: number | null;
  estimated_cost_usd: number | null;
  actual_cost_usd: number | null;
  phases: Record<string, number>;
  mlflow_run_id: string | null;
  lineage: Record<string, unknown> | null;
  tags: Record<string, string>;
  options: Record<string, unknown>;
  circuits: ICircuitInfo[];
  result: IJobResult | null;
}

/** One line of a job's append-only event log. */
export interface IJobEvent {
  seq: number;
  job_id: string;
  at: string;
  kind: string;
  from_state: JobState | null;
  to_state: JobState | null;
  actor: string;
  message: string | null;
}

/** A job with its event log (`?events=true`) and each circuit's OpenQASM 3 (`?qasm=true`). */
export interface IJobDetail extends IJobRecord {
  events?: IJobEvent[];
  qasm3?: string[];
}

export interface IJobPage {
  jobs: IJobRecord[];
  next: string | null;
}

/** The `job_status` v1 event: a job changed state. */
export interface IJobStatus {
  job_id: string;
  name: string | null;
  backend: string;
  old_state: JobState | null;
  new_state: JobState;
  time: string;
  seq: number;
  message: string | null;
}

export interface IEventsPage {
  events: IJobStatus[];
  next: number;
}

/** The id of the `job_status` event schema on the server's event bus. */
export const JOB_STATUS_SCHEMA = 'https://events.qmlops-jupyter.dev/job_status/v1';

/** A job to submit: circuits as OpenQASM 2 or 3 text. */
export interface IJobRequest {
  backend: string;
  circuits: string[];
  shots: number;
  name?: string | null;
  idempotency_key?: string | null;
  credential?: string | null;
  tags?: Record<string, string>;
}

/** A backend as users see it: its kind and limits. */
export interface IBackendInfo {
  name: string;
  provider: string;
  description: string;
  kind: string;
  simulator: boolean;
  local: boolean;
  enabled: boolean;
  available: boolean;
  status: string;
  max_qubits: number | null;
  max_shots: number;
  max_concurrent_jobs: number;
  native_gates: string[];
  supports_reattach: boolean;
  supports_cancel: boolean;
  /** not needed, configured or missing */
  credentials: string;
}

/** What may be shown about a stored credential: never the secret. */
export interface ICredentialInfo {
  alias: string;
  provider: string;
  owner: string;
  hint: string;
  created_at: string;
  updated_at: string;
  last_used_at: string | null;
}

export type CredentialProvider = 'ionq' | 'ibm' | 'aws';

/** A credential to store. Write-only: no answer ever carries the secret. */
export interface ICredentialRequest {
  provider: CredentialProvider;
  secret: Record<string, string>;
}

export interface ICredentialTest {
  alias: string;
  ok: boolean;
  message: string;
}

/** One field of a provider's credential form. */
export interface ICredentialField {
  name: string;
  label: string;
  secret: boolean;
  required: boolean;
  placeholder?: string;
}

/** The fields each provider's credential takes (the server's CredentialRequest schema). */
export function credentialFields(
  trans: TranslationBundle
): Record<CredentialProvider, ICredentialField[]> {
  return {
    ionq: [{ name: 'api_key', label: trans.__('API key'), secret: true, required: true }],
    ibm: [
      { name: 'token', label: trans.__('API token'), secret: true, required: true },
      {
        name: 'channel',
        label: trans.__('Channel'),
        secret: false,
        required: false,
        placeholder: 'ibm_quantum_platform' // eslint-disable-line jupyter/no-untranslated-string
      },
      { name: 'instance', label: trans.__('Instance (CRN)'), secret: false, required: false }
    ],
    aws: [
      {
        name: 'aws_access_key_id',
        label: trans.__('Access key id'),
        secret: true,
        required: true
      },
      {
        name: 'aws_secret_access_key',
        label: trans.__('Secret access key'),
        secret: true,
        required: true
      },
      {
        name: 'aws_session_token',
        label: trans.__('Session token'),
        secret: true,
        required: false
      },
      {
        name: 'region',
        label: trans.__('Region'),
        secret: false,
        required: false,
        placeholder: 'us-east-1' // eslint-disable-line jupyter/no-untranslated-string
      }
    ]
  };
}

/** One limit of a budget and where its period stands. */
export interface IBudgetLimit {
  limit: number;
  used: number;
  remaining: number;
  period_start: string;
}

/** A budget of one owner: backend `*` covers all backends together. */
export interface IBudgetStatus {
  owner: string;
  backend: string;
  shots_per_day: IBudgetLimit | null;
  usd_per_month: IBudgetLimit | null;
  updated_at: string;
}

/** An MLflow run that holds jobs (`qmlops runs --json`). */
export interface IRun {
  run_id: string;
  run_name: string | null;
  experiment: string;
  experiment_id: string;
  status: string;
  start_time: string | null;
  end_time: string | null;
  user: string | null;
  job_ids: string[];
  job_count: number;
  provider_job_ids?: string[];
  notebook: string | null;
  source?: string | null;
  git_commit?: string | null;
  git_dirty?: boolean | null;
  parent_run_id?: string | null;
  params: Record<string, string>;
  metrics: Record<string, number>;
  artifact_uri?: string | null;
}

/** A pipeline run's state; PARKED waits for provider jobs with its kernel freed. */
export type PipelineRunState =
  'QUEUED' | 'RUNNING' | 'PARKED' | 'COMPLETED' | 'FAILED' | 'TIMED_OUT' | 'CANCELLED';

export const PIPELINE_RUN_STATES: PipelineRunState[] = [
  'QUEUED',
  'RUNNING',
  'PARKED',
  'COMPLETED',
  'FAILED',
  'TIMED_OUT',
  'CANCELLED'
];

/** States a pipeline run never leaves. */
export const PIPELINE_TERMINAL_STATES: ReadonlySet<PipelineRunState> = new Set<PipelineRunState>([
  'COMPLETED',
  'FAILED',
  'TIMED_OUT',
  'CANCELLED'
]);

/** One run of a notebook as a pipeline (`qmlops pipeline runs --json`). */
export interface IPipelineRun {
  id: string;
  owner: string;
  notebook: string;
  parameters: Record<string, unknown>;
  state: PipelineRunState;
  attempts: number;
  max_retries: number;
  timeout: number | null;
  output_path: string | null;
  experiment: string | null;
  mlflow_run_id: string | null;
  error: string | null;
  /** The failing cell's index in the input notebook (0-based). */
  error_cell: number | null;
  error_ename: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  duration_s: number | null;
  pipeline_id?: string | null;
  schedule_id?: string | null;
  scheduled_for?: string | null;
  sweep_id?: string | null;
  sweep_point?: number | null;
  mlflow_parent_run_id?: string | null;
  /** While PARKED: the provider jobs it waits for. */
  parked_jobs?: string[] | null;
  park_cell?: number | null;
  parked_at?: string | null;
}

/** When a saved pipeline runs. */
export interface ISchedule {
  id: string;
  cron: string;
  timezone: string;
  paused: boolean;
  catch_up: 'once' | 'skip';
  stale_after: number;
  /** The next due time (null while paused). */
  next_due_at: string | null;
  last_scheduled_for: string | null;
}

/** A saved pipeline (`qmlops pipeline show --json`). */
export interface IPipeline {
  id: string;
  owner: string;
  name: string;
  notebook: string;
  parameters: Record<string, unknown>;
  experiment: string | null;
  timeout: number | null;
  retries: number;
  created_at: string;
  updated_at: string;
  schedule: ISchedule | null;
  last_run?: IPipelineRun | null;
}

export interface IPipelineRunPage {
  pipeline_runs: IPipelineRun[];
  next: string | null;
}

/** The `pipeline_status` v1 event: a pipeline run changed state. */
export interface IPipelineStatus {
  run_id: string;
  pipeline_id: string | null;
  pipeline: string | null;
  notebook: string;
  old_state: PipelineRunState | null;
  new_state: PipelineRunState;
  time: string;
  scheduled_for?: string | null;
  error?: string | null;
  error_cell?: number | null;
  parked_jobs?: number | null;
  mlflow_run_id?: string | null;
}

/** The id of the `pipeline_status` event schema on the server's event bus. */
export const PIPELINE_STATUS_SCHEMA = 'https://events.qmlops-jupyter.dev/pipeline_status/v1';

/** Whether the ledger, the engine and the event pump are alive. */
export interface IHealth {
  ok: boolean;
  starting?: boolean;
  ledger: { ok: boolean };
  engine: { hosted: boolean; ok: boolean };
  events: { ok: boolean };
  tracking: { enabled: boolean };
  backends: { name: string; available: boolean; enabled: boolean; status: string }[];
}

/** A dashboard, linked to its Voila page when this server can show it. */
export interface IDashboardLink {
  name: string;
  title: string;
  description: string;
  /** The notebook, relative to the server's contents root (null: not shown by this server). */
  path: string | null;
  /** Its Voila page, under the server's base URL (null: not shown by this server). */
  url: string | null;
}

/** The dashboards (`GET /dashboards`): whether Voila serves here, and why a link is missing. */
export interface IDashboardLinks {
  dashboards: IDashboardLink[];
  voila: boolean;
  /** Why a dashboard has no link, and what to do (one line); null when all are linked. */
  hint: string | null;
}

/** What a job would cost. */
export interface IEstimate {
  backend: string;
  usd: number | null;
  basis: string;
  breakdown: Record<string, number>;
  shots: number;
  circuits: number;
  free: boolean;
  source: string | null;
  as_of: string | null;
}

/** Every error the API answers: a stable code and one line. */
export interface IApiError {
  error: string;
  message: string;
}

/** Filters of the jobs list. */
export interface IJobFilter {
  state: JobState | '';
  backend: string;
}

/** Where a part of the model stands. */
export type LoadStatus = 'idle' | 'loading' | 'ready' | 'error';

export interface IResource<T> {
  status: LoadStatus;
  data: T;
  error: string | null;
}

/** The service the sidebar, the status bar and other extensions share. */
export interface IQmlopsService {
  readonly client: QmlopsClient;
  readonly model: IQmlopsModel;
}

/** The live state of the toolkit as the front end knows it. */
export interface IQmlopsModel {
  readonly changed: ISignal<IQmlopsModel, void>;
  readonly jobChanged: ISignal<IQmlopsModel, IJobRecord>;
  readonly backends: IResource<IBackendInfo[]>;
  readonly credentials: IResource<ICredentialInfo[]>;
  readonly jobs: IResource<IJobRecord[]>;
  readonly runs: IResource<IRun[]>;
  readonly budget: IResource<IBudgetStatus[]>;
  /** Saved pipelines, by name. */
  readonly pipelines: IResource<IPipeline[]>;
  /** Recent pipeline runs, newest first. */
  readonly pipelineRuns: IResource<IPipelineRun[]>;
  /** The dashboards, each with its Voila page when this server can show it. */
  readonly dashboards: IResource<IDashboardLink[]>;
  /** Why a dashboard has no link, and what to do (null: every one is linked). */
  readonly dashboardsHint: string | null;
  readonly filter: IJobFilter;
  /** Jobs not yet finished. */
  readonly runningCount: number;
  /** The largest share of any budget limit used (0..1), or null without budgets. */
  readonly budgetUse: number | null;
  /** Whether live events are arriving (false: the list is kept fresh by polling). */
  readonly live: boolean;
  /** Whether older jobs than those listed exist. */
  readonly hasMoreJobs: boolean;
  loadMoreJobs(): Promise<void>;
  setFilter(filter: Partial<IJobFilter>): void;
  refresh(): Promise<void>;
  refreshJobs(): Promise<void>;
  refreshBackends(): Promise<void>;
  refreshRuns(): Promise<void>;
  refreshBudget(): Promise<void>;
  /** Saved pipelines and recent pipeline runs. */
  refreshPipelines(): Promise<void>;
  /** The dashboards and their links (read at start and on a refresh). */
  refreshDashboards(): Promise<void>;
  pausePipeline(nameOrId: string): Promise<IPipeline>;
  resumePipeline(nameOrId: string): Promise<IPipeline>;
  deletePipeline(nameOrId: string): Promise<void>;
  /** Start a run of a saved pipeline now (QUEUED at first). */
  runPipelineNow(nameOrId: string): Promise<IPipelineRun>;
  handlePipelineEvent(event: IPipelineStatus): void;
  cancelJob(id: string): Promise<IJobRecord>;
  saveCredential(alias: string, request: ICredentialRequest): Promise<ICredentialInfo>;
  deleteCredential(alias: string): Promise<void>;
  testCredential(alias: string): Promise<ICredentialTest>;
  submitTestJob(backend: string): Promise<IJobRecord>;
  handleEvent(event: IJobStatus): void;
}

export const IQmlopsService = new Token<IQmlopsService>(
  'qmlops-jupyter:IQmlopsService',
  'The qmlops REST client and the live model of backends, jobs, runs, pipelines, budgets and dashboards.'
);

/** Command ids. */
export namespace CommandIDs {
  export const openSidebar = 'qmlops:open-sidebar';
  export const refresh = 'qmlops:refresh';
  export const addCredential = 'qmlops:add-credential';
  export const testCredential = 'qmlops:test-credential';
  export const deleteCredential = 'qmlops:delete-credential';
  export const openJob = 'qmlops:open-job';
  export const cancelJob = 'qmlops:cancel-job';
  export const submitTestJob = 'qmlops:submit-test-job';
  export const openMlflow = 'qmlops:open-mlflow';
  export const showBudget = 'qmlops:show-budget';
  export const showPipelines = 'qmlops:show-pipelines';
  export const runPipeline = 'qmlops:run-pipeline';
  export const pausePipeline = 'qmlops:pause-pipeline';
  export const resumePipeline = 'qmlops:resume-pipeline';
  export const deletePipeline = 'qmlops:delete-pipeline';
}
