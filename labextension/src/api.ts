/**
 * A typed client for the qmlops REST API under `{baseUrl}qmlops/api/v1/`.
 *
 * Every request goes through JupyterLab's ServerConnection (the page's token and XSRF cookie);
 * every failure is a QmlopsApiError carrying the server's stable error code and its one-line
 * message, or `network_error` when the server could not be reached.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import {
  IBackendInfo,
  IBudgetStatus,
  ICredentialInfo,
  ICredentialRequest,
  ICredentialTest,
  IDashboardLinks,
  IEstimate,
  IEventsPage,
  IHealth,
  IJobDetail,
  IJobPage,
  IJobRecord,
  IJobRequest,
  IPipeline,
  IPipelineRun,
  IPipelineRunPage,
  IRun,
  JobState,
  PipelineRunState
} from './tokens';

export const API_PATH = 'qmlops/api/v1';

/** An error answered by the API (or the network failing under it). */
export class QmlopsApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** The answer's parsed JSON body, when it had one. */
    readonly body?: unknown
  ) {
    super(message);
    this.name = 'QmlopsApiError';
  }

  /** The server is up but the toolkit is not ready (starting, or could not start). */
  get notReady(): boolean {
    return this.status === 503;
  }
}

type Query = Record<string, string | number | boolean | string[] | null | undefined>;

/** A query string from the parameters that are set (arrays repeat the parameter). */
export function queryString(query: Query = {}): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') {
      continue;
    }
    const values = Array.isArray(value) ? value : [value];
    for (const item of values) {
      parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(item))}`);
    }
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/**
 * One call to the API: the parsed JSON body (undefined for 204), or a QmlopsApiError.
 */
export async function requestAPI<T>(
  settings: ServerConnection.ISettings,
  endPoint: string,
  init: RequestInit = {},
  query: Query = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_PATH, endPoint) + queryString(query);
  const headers = new Headers(init.headers);
  if (init.body !== undefined && !headers.has('Content-Type')) {
    headers.set('Content-Type', 'application/json');
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { ...init, headers }, settings);
  } catch (error) {
    const reason = (error as Error)?.message ?? String(error);
    throw new QmlopsApiError(
      0,
      'network_error',
      `The Jupyter server could not be reached: ${reason}`
    );
  }
  const text = await response.text();
  let data: unknown = undefined;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!response.ok) {
    const body = (data ?? {}) as Partial<{ error: string; message: string }>;
    const code =
      typeof body.error === 'string'
        ? body.error
        : response.status === 404
          ? 'not_found'
          : 'http_error';
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : response.status === 404
          ? 'The qmlops server extension is not enabled on this Jupyter server (no /qmlops/api/v1/).'
          : `${response.status} ${response.statusText || 'error'}`.trim();
    throw new QmlopsApiError(response.status, code, message, data);
  }
  if (text.length > 0 && data === undefined) {
    throw new QmlopsApiError(
      response.status,
      'bad_response',
      `The server answered ${endPoint} with something that is not JSON.`
    );
  }
  return data as T;
}

export interface IJobQuery {
  state?: JobState | '';
  backend?: string;
  limit?: number;
  cursor?: string | null;
}

export interface IPipelineRunQuery {
  state?: PipelineRunState | '';
  /** A saved pipeline's name or id. */
  pipeline?: string;
  limit?: number;
  cursor?: string | null;
}

/** The REST API, one method per route. */
export class QmlopsClient {
  constructor(
    readonly serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  private call<T>(endPoint: string, init: RequestInit = {}, query: Query = {}): Promise<T> {
    return requestAPI<T>(this.serverSettings, endPoint, init, query);
  }

  /** The server's health; a 503 (starting, or a part is down) is an answer too. */
  async health(): Promise<IHealth> {
    try {
      return await this.call<IHealth>('health');
    } catch (error) {
      const body =
        error instanceof QmlopsApiError ? (error.body as Partial<IHealth> | undefined) : undefined;
      if (
        error instanceof QmlopsApiError &&
        error.status === 503 &&
        typeof body?.ok === 'boolean'
      ) {
        return body as IHealth;
      }
      throw error;
    }
  }

  backends(): Promise<IBackendInfo[]> {
    return this.call<IBackendInfo[]>('backends');
  }

  backend(name: string): Promise<IBackendInfo> {
    return this.call<IBackendInfo>(`backends/${encodeURIComponent(name)}`);
  }

  jobs(query: IJobQuery = {}): Promise<IJobPage> {
    return this.call<IJobPage>(
      'jobs',
      {},
      {
        state: query.state,
        backend: query.backend,
        limit: query.limit,
        cursor: query.cursor
      }
    );
  }

  job(id: string, options: { events?: boolean; qasm?: boolean } = {}): Promise<IJobDetail> {
    return this.call<IJobDetail>(
      `jobs/${encodeURIComponent(id)}`,
      {},
      {
        events: options.events ? 'true' : undefined,
        qasm: options.qasm ? 'true' : undefined
      }
    );
  }

  submit(request: IJobRequest, wait?: number): Promise<IJobRecord> {
    return this.call<IJobRecord>(
      'jobs',
      { method: 'POST', body: JSON.stringify(request) },
      { wait: wait !== undefined && wait > 0 ? wait : undefined }
    );
  }

  cancel(id: string): Promise<IJobRecord> {
    return this.call<IJobRecord>(`jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
  }

  /** Status changes past `after`; waits up to `wait` seconds (≤ 30) for a first one. */
  events(after: number, wait = 0, jobIds: string[] = []): Promise<IEventsPage> {
    return this.call<IEventsPage>(
      'events',
      {},
      { after, wait, job_id: jobIds.length ? jobIds : undefined }
    );
  }

  credentials(): Promise<ICredentialInfo[]> {
    return this.call<ICredentialInfo[]>('credentials');
  }

  /** Store or replace a credential. The answer is masked: the secret never comes back. */
  putCredential(alias: string, request: ICredentialRequest): Promise<ICredentialInfo> {
    return this.call<ICredentialInfo>(`credentials/${encodeURIComponent(alias)}`, {
      method: 'PUT',
      body: JSON.stringify(request)
    });
  }

  async deleteCredential(alias: string): Promise<void> {
    await this.call<void>(`credentials/${encodeURIComponent(alias)}`, { method: 'DELETE' });
  }

  /** Ask the provider whether it accepts the credential (as used for `backend`, if given). */
  testCredential(alias: string, backend?: string): Promise<ICredentialTest> {
    return this.call<ICredentialTest>(
      `credentials/${encodeURIComponent(alias)}/test`,
      { method: 'POST' },
      { backend }
    );
  }

  budget(): Promise<IBudgetStatus[]> {
    return this.call<IBudgetStatus[]>('budget');
  }

  setBudget(budget: {
    backend?: string | null;
    shots_per_day?: number | null;
    usd_per_month?: number | null;
  }): Promise<IBudgetStatus[]> {
    return this.call<IBudgetStatus[]>('budget', { method: 'PUT', body: JSON.stringify(budget) });
  }

  estimate(request: { backend: string; circuits: string[]; shots: number }): Promise<IEstimate> {
    return this.call<IEstimate>('estimate', { method: 'POST', body: JSON.stringify(request) });
  }

  async runs(limit = 20, experiment?: string): Promise<IRun[]> {
    const page = await this.call<{ runs: IRun[] }>('runs', {}, { limit, experiment });
    return page.runs;
  }

  /** Your saved pipelines, with their schedule and newest run. */
  async pipelines(): Promise<IPipeline[]> {
    const answer = await this.call<{ pipelines: IPipeline[] }>('pipelines');
    return answer.pipelines;
  }

  pipeline(nameOrId: string): Promise<IPipeline> {
    return this.call<IPipeline>(`pipelines/${encodeURIComponent(nameOrId)}`);
  }

  async deletePipeline(nameOrId: string): Promise<void> {
    await this.call<void>(`pipelines/${encodeURIComponent(nameOrId)}`, { method: 'DELETE' });
  }

  pausePipeline(nameOrId: string): Promise<IPipeline> {
    return this.call<IPipeline>(`pipelines/${encodeURIComponent(nameOrId)}/pause`, {
      method: 'POST'
    });
  }

  resumePipeline(nameOrId: string): Promise<IPipeline> {
    return this.call<IPipeline>(`pipelines/${encodeURIComponent(nameOrId)}/resume`, {
      method: 'POST'
    });
  }

  /** Run a saved pipeline now: the answer (202) is the QUEUED run. */
  runPipeline(nameOrId: string): Promise<IPipelineRun> {
    return this.call<IPipelineRun>(`pipelines/${encodeURIComponent(nameOrId)}/runs`, {
      method: 'POST'
    });
  }

  pipelineRuns(query: IPipelineRunQuery = {}): Promise<IPipelineRunPage> {
    return this.call<IPipelineRunPage>(
      'pipeline-runs',
      {},
      { state: query.state, pipeline: query.pipeline, limit: query.limit, cursor: query.cursor }
    );
  }

  pipelineRun(id: string): Promise<IPipelineRun> {
    return this.call<IPipelineRun>(`pipeline-runs/${encodeURIComponent(id)}`);
  }

  /** The dashboards, each with its Voila page in this server when it can be shown here. */
  dashboards(): Promise<IDashboardLinks> {
    return this.call<IDashboardLinks>('dashboards');
  }

  /** Where the MLflow UI is served inside JupyterLab (jupyter-server-proxy), or a run's page. */
  mlflowUrl(run?: { experiment_id: string; run_id: string }): string {
    const base = URLExt.join(this.serverSettings.baseUrl, 'mlflow/');
    return run
      ? `${base}#/experiments/${encodeURIComponent(run.experiment_id)}/runs/${encodeURIComponent(run.run_id)}`
      : base;
  }
}
