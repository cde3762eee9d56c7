/**
 * Realistic bodies of the qmlops REST API (built from the schemas of
 * qmlops_jupyter/server/openapi.json) and a stand-in for the Jupyter server that answers
 * `ServerConnection.makeRequest` with real `Response` objects and records every request.
 */
import { Event, ServerConnection } from '@jupyterlab/services';
import { setImmediate as nextMacrotask } from 'timers';
import {
  IBackendInfo,
  IBudgetStatus,
  ICredentialInfo,
  IDashboardLinks,
  IEstimate,
  IHealth,
  IJobRecord,
  IJobStatus,
  IPipeline,
  IPipelineRun,
  IPipelineStatus,
  IRun,
  JOB_STATUS_SCHEMA,
  PIPELINE_STATUS_SCHEMA
} from '../tokens';

/** A user server behind JupyterHub: the base URL has a path of its own. */
export const BASE_URL = 'http://127.0.0.1:8888/user/ada/';
export const API_ROOT = `${BASE_URL}qmlops/api/v1/`;

export function settings(): ServerConnection.ISettings {
  return ServerConnection.makeSettings({
    baseUrl: BASE_URL,
    wsUrl: 'ws://127.0.0.1:8888/user/ada/'
  });
}

/** The dashboards as a server whose Voila shows them all answers (links under its base URL). */
export const DASHBOARDS: IDashboardLinks = {
  dashboards: [
    ['jobs', 'Jobs', 'Live counts by state and backend, a filterable job table.'],
    ['experiments', 'Experiments', 'MLflow runs of an experiment side by side.'],
    ['cost', 'Cost and budget', 'Shots and money by day, backend and user.']
  ].map(([name, title, description]) => ({
    name,
    title,
    description,
    path: `notebooks/dashboards/${name}.ipynb`,
    url: `/user/ada/voila/render/notebooks/dashboards/${name}.ipynb`
  })),
  voila: true,
  hint: null
};

/** The dashboards as a server without Voila answers: no links, and why. */
export const DASHBOARDS_WITHOUT_VOILA: IDashboardLinks = {
  dashboards: DASHBOARDS.dashboards.map(board => ({ ...board, path: null, url: null })),
  voila: false,
  hint: 'Voila is not enabled in this server: `jupyter server extension enable voila`, then restart the server'
};

export const BELL_QASM2 =
  'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n';

export function backend(overrides: Partial<IBackendInfo> = {}): IBackendInfo {
  return {
    name: 'aer',
    provider: 'qiskit-aer',
    description: 'Qiskit Aer simulator on this machine',
    kind: 'simulator',
    simulator: true,
    local: true,
    enabled: true,
    available: true,
    status: 'available',
    max_qubits: 30,
    max_shots: 1000000,
    max_concurrent_jobs: 2,
    native_gates: ['cx', 'h', 'measure', 'rz', 'sx', 'x'],
    supports_reattach: false,
    supports_cancel: true,
    credentials: 'not needed',
    ...overrides
  };
}

export const AER = backend();
export const IONQ = backend({
  name: 'ionq',
  provider: 'ionq',
  description: 'IonQ cloud (simulator and QPUs)',
  kind: 'qpu',
  simulator: false,
  local: false,
  available: false,
  status: 'credentials missing',
  max_qubits: 36,
  max_shots: 10000,
  max_concurrent_jobs: 5,
  native_gates: ['gpi', 'gpi2', 'ms'],
  supports_reattach: true,
  credentials: 'missing'
});

export function credential(overrides: Partial<ICredentialInfo> = {}): ICredentialInfo {
  return {
    alias: 'ionq-main',
    provider: 'ionq',
    owner: 'ada',
    hint: '…a9f2',
    created_at: '2026-11-20T09:12:44.120031Z',
    updated_at: '2026-11-20T09:12:44.120031Z',
    last_used_at: null,
    ...overrides
  };
}

let jobCounter = 0;

/** A job record as `GET /jobs/{id}` answers it. */
export function job(overrides: Partial<IJobRecord> = {}): IJobRecord {
  jobCounter += 1;
  const id = overrides.id ?? `5f2c9a1e0b7d${(4096 + jobCounter).toString(16).padStart(4, '0')}`;
  return {
    id,
    owner: 'ada',
    name: 'bell',
    backend: 'aer',
    state: 'RUNNING',
    shots: 1024,
    created_at: '2026-11-26T15:30:00.250000Z',
    updated_at: '2026-11-26T15:30:01.500000Z',
    submitted_at: '2026-11-26T15:30:00.900000Z',
    started_at: '2026-11-26T15:30:01.500000Z',
    finished_at: null,
    provider_job_id: null,
    error: null,
    error_kind: null,
    idempotency_key: null,
    attempts: 1,
    polls: 0,
    queue_position: null,
    timeout: null,
    estimated_cost_usd: 0,
    actual_cost_usd: null,
    phases: { validate: 0.004, transpile: 0.031 },
    mlflow_run_id: null,
    lineage: null,
    tags: {},
    options: {},
    circuits: [
      {
        index: 0,
        name: 'bell',
        num_qubits: 2,
        num_clbits: 2,
        depth: 3,
        size: 4,
        gate_counts: { h: 1, cx: 1, measure: 2 },
        source_format: 'qasm3'
      }
    ],
    result: null,
    ...overrides
  };
}

/** The same job, finished with counts. */
export function completed(
  record: IJobRecord,
  updatedAt = '2026-11-26T15:30:03.750000Z'
): IJobRecord {
  return {
    ...record,
    state: 'COMPLETED',
    updated_at: updatedAt,
    finished_at: updatedAt,
    actual_cost_usd: 0,
    phases: { ...record.phases, run: 1.8, post_process: 0.01 },
    mlflow_run_id: 'a3f0c2d4e5b6478899aabbccddeeff00',
    result: {
      counts: [{ '00': 517, '11': 507 }],
      shots: record.shots,
      metadata: { simulator: 'aer_simulator', method: 'statevector' }
    }
  };
}

/** A `job_status` v1 event: the data of the event (no schema id). */
export function status(
  record: IJobRecord,
  newState: IJobStatus['new_state'],
  seq: number,
  time = '2026-11-26T15:30:02.000000+00:00'
): IJobStatus {
  return {
    job_id: record.id,
    name: record.name,
    backend: record.backend,
    old_state: record.state,
    new_state: newState,
    time,
    seq,
    message: null
  };
}

/** The event as the server's event bus delivers it over `/api/events/subscribe`. */
export function emission(
  event: IJobStatus,
  schemaKey: 'schema_id' | '__schema__' = 'schema_id'
): Event.Emission {
  return { [schemaKey]: JOB_STATUS_SCHEMA, ...event } as unknown as Event.Emission;
}

export function budget(overrides: Partial<IBudgetStatus> = {}): IBudgetStatus {
  return {
    owner: 'ada',
    backend: '*',
    shots_per_day: {
      limit: 100000,
      used: 40000,
      remaining: 60000,
      period_start: '2026-11-26T00:00:00Z'
    },
    usd_per_month: {
      limit: 50,
      used: 12.5,
      remaining: 37.5,
      period_start: '2026-11-01T00:00:00Z'
    },
    updated_at: '2026-11-26T15:30:03.750000Z',
    ...overrides
  };
}

export function run(overrides: Partial<IRun> = {}): IRun {
  return {
    run_id: 'a3f0c2d4e5b6478899aabbccddeeff00',
    run_name: 'vqe-h2-sweep',
    experiment: 'qmlops',
    experiment_id: '4',
    status: 'FINISHED',
    start_time: '2026-11-26T15:29:58.001000Z',
    end_time: '2026-11-26T15:30:04.120000Z',
    user: 'ada',
    job_ids: ['5f2c9a1e0b7d1001'],
    job_count: 1,
    notebook: 'vqe.ipynb',
    params: { shots: '1024', backend: 'aer' },
    metrics: { energy: -1.137, 'counts.00': 517 },
    ...overrides
  };
}

export const HEALTH: IHealth = {
  ok: true,
  ledger: { ok: true },
  engine: { hosted: true, ok: true },
  events: { ok: true },
  tracking: { enabled: true },
  backends: [{ name: 'aer', available: true, enabled: true, status: 'available' }]
};

/** What `GET /health` answers (503) while the extension is still starting. */
export const HEALTH_STARTING: IHealth = {
  ok: false,
  starting: true,
  ledger: { ok: false },
  engine: { hosted: true, ok: false },
  events: { ok: false },
  tracking: { enabled: false },
  backends: []
};

export const ESTIMATE: IEstimate = {
  backend: 'ionq',
  usd: 9.73,
  basis: '1 circuit × 1000 shots; $0.3 per task + $0.0094 per shot',
  breakdown: { task: 0.3, shots: 9.43 },
  shots: 1000,
  circuits: 1,
  free: false,
  source: 'ionq.com/pricing',
  as_of: '2026-10-01'
};

/** A JSON answer of the API, as the server writes it. */
export function json(body: unknown, status = 200, statusText = 'OK'): Response {
  return new Response(JSON.stringify(body), {
    status,
    statusText,
    headers: { 'Content-Type': 'application/json' }
  });
}

export function apiError(
  status: number,
  error: string,
  message: string,
  statusText = ''
): Response {
  return json({ error, message }, status, statusText);
}

/** One request as the client sent it. */
export interface ISentRequest {
  url: string;
  /** The path under the API root, e.g. `jobs/abc/cancel` (still URL-escaped). */
  route: string;
  query: URLSearchParams;
  method: string;
  headers: Headers;
  body: string | null;
  settings: ServerConnection.ISettings;
}

type Answer =
  Response | Error | ((request: ISentRequest) => Response | Error | Promise<Response | Error>);

/**
 * Answers requests by `METHOD route` (route without the query string), and records them.
 * A request nobody answers gets a 599 naming it, so the test that made it fails visibly.
 */
export class FakeServer {
  readonly requests: ISentRequest[] = [];
  spy: jest.SpyInstance;

  constructor() {
    this.spy = jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockImplementation(async (url: string, init: RequestInit, s: ServerConnection.ISettings) => {
        const parsed = new URL(url);
        const request: ISentRequest = {
          url,
          route: url.startsWith(API_ROOT)
            ? parsed.pathname.slice(new URL(API_ROOT).pathname.length)
            : url,
          query: parsed.searchParams,
          method: (init.method ?? 'GET').toUpperCase(),
          headers: new Headers(init.headers),
          body:
            typeof init.body === 'string'
              ? init.body
              : init.body === null || init.body === undefined
                ? null
                : String(init.body),
          settings: s
        };
        this.requests.push(request);
        const answer = this._find(request.method, request.route);
        if (answer === undefined) {
          return json({ error: 'unrouted', message: `${request.method} ${request.route}` }, 599);
        }
        const value = typeof answer === 'function' ? await answer(request) : answer;
        if (value instanceof Error) {
          throw value;
        }
        // A Response body can be read once: a fixed answer is cloned for each request.
        return typeof answer === 'function' ? value : value.clone();
      });
  }

  /** Answer `METHOD route` (replaces an earlier answer of the same route). */
  on(method: string, route: string, answer: Answer): this {
    this._routes.set(`${method.toUpperCase()} ${route}`, answer);
    return this;
  }

  /** The requests made to `METHOD route`. */
  sent(method: string, route: string): ISentRequest[] {
    return this.requests.filter(r => r.method === method.toUpperCase() && r.route === route);
  }

  /** `METHOD route?query` of every request, in order. */
  log(): string[] {
    return this.requests.map(r => {
      const q = r.query.toString();
      return `${r.method} ${r.route}${q ? `?${q}` : ''}`;
    });
  }

  clear(): void {
    this.requests.length = 0;
  }

  restore(): void {
    this.spy.mockRestore();
  }

  private _find(method: string, route: string): Answer | undefined {
    return this._routes.get(`${method} ${route}`);
  }

  private _routes = new Map<string, Answer>();
}

/** A promise resolved from outside: to hold a response back and release it later. */
export class Deferred<T> {
  readonly promise: Promise<T>;
  resolve!: (value: T) => void;
  constructor() {
    this.promise = new Promise<T>(resolve => {
      this.resolve = resolve;
    });
  }
}

/**
 * Wait until nothing is left to do but timers: pending responses read, handlers run. Uses
 * Node's own setImmediate, which jest's fake timers leave alone.
 */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await new Promise<void>(resolve => nextMacrotask(resolve));
  }
}

/** A pipeline run as `GET /pipeline-runs` lists it (COMPLETED by default). */
export function pipelineRun(overrides: Partial<IPipelineRun> = {}): IPipelineRun {
  return {
    id: '7c1e5a9b3d2f4e01',
    owner: 'ada',
    notebook: '/home/ada/nightly.ipynb',
    parameters: { shots: 1000, qmlops_pipeline_run_id: '7c1e5a9b3d2f4e01' },
    state: 'COMPLETED',
    attempts: 1,
    max_retries: 0,
    timeout: null,
    output_path: '/home/ada/.qmlops/pipelines/7c1e5a9b3d2f4e01/nightly.ipynb',
    experiment: 'qmlops',
    mlflow_run_id: 'b4e1d2c3a5f6478899aabbccddeeff01',
    error: null,
    error_cell: null,
    error_ename: null,
    created_at: '2026-11-26T03:00:00.100000Z',
    started_at: '2026-11-26T03:00:00.900000Z',
    finished_at: '2026-11-26T03:00:12.900000Z',
    duration_s: 12,
    pipeline_id: 'a1b2c3d4e5f60001',
    schedule_id: 'f6e5d4c3b2a10001',
    scheduled_for: '2026-11-26T03:00:00Z',
    sweep_id: null,
    sweep_point: null,
    mlflow_parent_run_id: null,
    parked_jobs: null,
    park_cell: null,
    parked_at: null,
    ...overrides
  };
}

/** A saved pipeline with an active nightly schedule. */
export function pipeline(overrides: Partial<IPipeline> = {}): IPipeline {
  return {
    id: 'a1b2c3d4e5f60001',
    owner: 'ada',
    name: 'nightly',
    notebook: '/home/ada/nightly.ipynb',
    parameters: { shots: 1000, backend: 'aer' },
    experiment: 'qmlops',
    timeout: null,
    retries: 0,
    created_at: '2026-11-20T10:00:00Z',
    updated_at: '2026-11-20T10:00:00Z',
    schedule: {
      id: 'f6e5d4c3b2a10001',
      cron: '0 3 * * *',
      timezone: 'UTC',
      paused: false,
      catch_up: 'once',
      stale_after: 86400,
      next_due_at: '2026-11-27T03:00:00Z',
      last_scheduled_for: '2026-11-26T03:00:00Z'
    },
    last_run: pipelineRun(),
    ...overrides
  };
}

/** A `pipeline_status` v1 event of a run. */
export function pipelineStatus(
  record: IPipelineRun,
  newState: IPipelineStatus['new_state'],
  time = '2026-11-26T15:31:00.000000+00:00',
  extra: Partial<IPipelineStatus> = {}
): IPipelineStatus {
  return {
    run_id: record.id,
    pipeline_id: record.pipeline_id ?? null,
    pipeline: 'nightly',
    notebook: record.notebook,
    old_state: record.state,
    new_state: newState,
    time,
    ...extra
  };
}

/** A pipeline event as the server's event bus delivers it. */
export function pipelineEmission(event: IPipelineStatus): Event.Emission {
  return { schema_id: PIPELINE_STATUS_SCHEMA, ...event } as unknown as Event.Emission;
}
