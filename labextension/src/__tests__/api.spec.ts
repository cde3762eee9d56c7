/**
 * The REST client against mocked answers of the Jupyter server: the request each method sends
 * (URL, method, query, headers, body) and what it makes of the answer, errors included.
 */
import { ServerConnection } from '@jupyterlab/services';
import { API_PATH, QmlopsApiError, QmlopsClient, queryString, requestAPI } from '../api';
import { IJobDetail, IJobRequest } from '../tokens';
import {
  AER,
  API_ROOT,
  BASE_URL,
  BELL_QASM2,
  DASHBOARDS,
  DASHBOARDS_WITHOUT_VOILA,
  ESTIMATE,
  FakeServer,
  HEALTH,
  HEALTH_STARTING,
  IONQ,
  apiError,
  budget,
  completed,
  credential,
  job,
  json,
  pipeline,
  pipelineRun,
  run,
  settings
} from './fixtures';

const NOT_ENABLED =
  'The qmlops server extension is not enabled on this Jupyter server (no /qmlops/api/v1/).';

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<QmlopsApiError> {
  let value: unknown;
  try {
    value = await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(QmlopsApiError);
    return error as QmlopsApiError;
  }
  throw new Error(`expected a QmlopsApiError, got the answer ${JSON.stringify(value)}`);
}

describe('queryString', () => {
  it('keeps only the parameters that are set, in order, escaped, arrays repeated', () => {
    expect(
      queryString({
        state: 'RUNNING',
        backend: undefined,
        cursor: null,
        name: '',
        job_id: ['a b', 'c&d=e'],
        after: 0,
        events: true,
        'odd key': 'x/y?#'
      })
    ).toBe(
      '?state=RUNNING&job_id=a%20b&job_id=c%26d%3De&after=0&events=true&odd%20key=x%2Fy%3F%23'
    );
  });

  it('is empty without parameters', () => {
    expect(queryString()).toBe('');
    expect(queryString({ state: '', backend: undefined, cursor: null })).toBe('');
    expect(queryString({ job_id: [] })).toBe('');
  });
});

describe('QmlopsClient', () => {
  let server: FakeServer;
  let client: QmlopsClient;

  beforeEach(() => {
    server = new FakeServer();
    client = new QmlopsClient(settings());
  });

  afterEach(() => {
    server.restore();
  });

  /** The one request the call made. */
  function only() {
    expect(server.requests).toHaveLength(1);
    return server.requests[0];
  }

  describe('reads', () => {
    it('health: GET health, through the client settings', async () => {
      server.on('GET', 'health', json(HEALTH));
      await expect(client.health()).resolves.toEqual(HEALTH);
      const sent = only();
      expect(sent.url).toBe(`${API_ROOT}health`);
      expect(sent.method).toBe('GET');
      expect(sent.body).toBeNull();
      expect(sent.headers.has('Content-Type')).toBe(false);
      expect(sent.settings).toBe(client.serverSettings);
    });

    it('health: the 503 report of a server that is still starting is an answer, not an error', async () => {
      // openapi.json: GET /health answers 503 with a Health body saying which part is not alive.
      server.on('GET', 'health', json(HEALTH_STARTING, 503, 'Service Unavailable'));
      await expect(client.health()).resolves.toEqual(HEALTH_STARTING);
    });

    it('backends: GET backends', async () => {
      server.on('GET', 'backends', json([AER, IONQ]));
      await expect(client.backends()).resolves.toEqual([AER, IONQ]);
      expect(only().url).toBe(`${API_ROOT}backends`);
    });

    it('backend: GET backends/{name}, the name escaped', async () => {
      server.on('GET', 'backends/ionq', json(IONQ));
      await expect(client.backend('ionq')).resolves.toEqual(IONQ);
      expect(only().url).toBe(`${API_ROOT}backends/ionq`);

      server.clear();
      const arn = 'braket/arn:aws:braket:::device/quantum-simulator/amazon/sv1?x#y';
      server.on('GET', `backends/${encodeURIComponent(arn)}`, json(AER));
      await client.backend(arn);
      expect(only().url).toBe(
        `${API_ROOT}backends/braket%2Farn%3Aaws%3Abraket%3A%3A%3Adevice%2Fquantum-simulator%2Famazon%2Fsv1%3Fx%23y`
      );
    });

    it('jobs: GET jobs without a query when no filter is set', async () => {
      const page = { jobs: [job(), job({ state: 'QUEUED' })], next: null };
      server.on('GET', 'jobs', json(page));
      await expect(client.jobs()).resolves.toEqual(page);
      expect(only().url).toBe(`${API_ROOT}jobs`);

      server.clear();
      await client.jobs({ state: '', backend: '', cursor: null });
      expect(only().url).toBe(`${API_ROOT}jobs`);
    });

    it('jobs: state, backend, limit and cursor go into the query', async () => {
      const page = { jobs: [job({ backend: 'ionq', state: 'QUEUED' })], next: 'eyJvIjoxMH0=' };
      server.on('GET', 'jobs', json(page));
      const answer = await client.jobs({
        state: 'QUEUED',
        backend: 'ionq',
        limit: 10,
        cursor: 'eyJvIjoxMH0='
      });
      expect(answer.next).toBe('eyJvIjoxMH0=');
      expect(answer.jobs[0].state).toBe('QUEUED');
      expect(only().url).toBe(
        `${API_ROOT}jobs?state=QUEUED&backend=ionq&limit=10&cursor=eyJvIjoxMH0%3D`
      );
    });

    it('job: GET jobs/{id}, with events and qasm only when asked', async () => {
      const record = completed(job({ id: '5f2c9a1e0b7d4e11' }));
      const detail: IJobDetail = {
        ...record,
        events: [
          {
            seq: 812,
            job_id: record.id,
            at: '2026-11-26T15:30:03.750000Z',
            kind: 'transition',
            from_state: 'RUNNING',
            to_state: 'COMPLETED',
            actor: 'engine',
            message: null
          }
        ],
        qasm3: [
          'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] c;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n'
        ]
      };
      server.on('GET', 'jobs/5f2c9a1e0b7d4e11', json(detail));

      await expect(client.job('5f2c9a1e0b7d4e11')).resolves.toEqual(detail);
      expect(only().url).toBe(`${API_ROOT}jobs/5f2c9a1e0b7d4e11`);

      server.clear();
      const answer = await client.job('5f2c9a1e0b7d4e11', { events: true, qasm: true });
      expect(only().url).toBe(`${API_ROOT}jobs/5f2c9a1e0b7d4e11?events=true&qasm=true`);
      expect(answer.events?.[0].to_state).toBe('COMPLETED');
      expect(answer.qasm3?.[0]).toContain('cx q[0], q[1];');
      expect(answer.result?.counts[0]).toEqual({ '00': 517, '11': 507 });

      server.clear();
      await client.job('5f2c9a1e0b7d4e11', { events: false, qasm: true });
      expect(only().url).toBe(`${API_ROOT}jobs/5f2c9a1e0b7d4e11?qasm=true`);
    });

    it('events: after and wait always, job_id repeated once per job', async () => {
      const page = {
        events: [
          {
            job_id: '5f2c9a1e0b7d4e11',
            name: 'bell',
            backend: 'aer',
            old_state: 'RUNNING',
            new_state: 'COMPLETED',
            time: '2026-11-26T15:30:03.750000+00:00',
            seq: 812,
            message: null
          }
        ],
        next: 812
      };
      server.on('GET', 'events', json(page));
      await expect(client.events(0)).resolves.toEqual(page);
      expect(only().url).toBe(`${API_ROOT}events?after=0&wait=0`);

      server.clear();
      await client.events(811, 25, ['5f2c9a1e0b7d4e11', 'job with space']);
      const sent = only();
      expect(sent.url).toBe(
        `${API_ROOT}events?after=811&wait=25&job_id=5f2c9a1e0b7d4e11&job_id=job%20with%20space`
      );
      expect(sent.query.getAll('job_id')).toEqual(['5f2c9a1e0b7d4e11', 'job with space']);
    });

    it('credentials: GET credentials', async () => {
      const list = [
        credential(),
        credential({ alias: 'ibm-open', provider: 'ibm', hint: '…7c1d' })
      ];
      server.on('GET', 'credentials', json(list));
      await expect(client.credentials()).resolves.toEqual(list);
      expect(only().url).toBe(`${API_ROOT}credentials`);
    });

    it('budget: GET budget', async () => {
      const list = [budget(), budget({ backend: 'ionq', shots_per_day: null })];
      server.on('GET', 'budget', json(list));
      await expect(client.budget()).resolves.toEqual(list);
      expect(only().url).toBe(`${API_ROOT}budget`);
    });

    it('runs: GET runs with limit 20 by default, unwrapping {runs}', async () => {
      const runs = [run(), run({ run_id: '0b1c2d3e4f5a46778899aabbccddeeff', metrics: {} })];
      server.on('GET', 'runs', json({ runs }));
      await expect(client.runs()).resolves.toEqual(runs);
      expect(only().url).toBe(`${API_ROOT}runs?limit=20`);

      server.clear();
      await client.runs(5, 'vqe h2/sweep');
      expect(only().url).toBe(`${API_ROOT}runs?limit=5&experiment=vqe%20h2%2Fsweep`);
    });
  });

  describe('dashboards', () => {
    it('dashboards: GET dashboards, the links and the hint as the server answers them', async () => {
      server.on('GET', 'dashboards', json(DASHBOARDS));
      await expect(client.dashboards()).resolves.toEqual(DASHBOARDS);
      expect(only().url).toBe(`${API_ROOT}dashboards`);

      server.clear();
      server.on('GET', 'dashboards', json(DASHBOARDS_WITHOUT_VOILA));
      const answer = await client.dashboards();
      expect(answer.dashboards.map(board => board.url)).toEqual([null, null, null]);
      expect(answer.hint).toContain('Voila is not enabled');
    });
  });

  describe('writes', () => {
    const request: IJobRequest = {
      backend: 'aer',
      circuits: [BELL_QASM2],
      shots: 1000,
      name: 'bell',
      idempotency_key: 'nb-cell-7',
      tags: { sweep: '3' }
    };

    it('submit: POST jobs with the request as JSON; 201 answers the record', async () => {
      const record = job({
        state: 'CREATED',
        name: 'bell',
        shots: 1000,
        idempotency_key: 'nb-cell-7'
      });
      server.on('POST', 'jobs', json(record, 201, 'Created'));
      await expect(client.submit(request)).resolves.toEqual(record);
      const sent = only();
      expect(sent.url).toBe(`${API_ROOT}jobs`);
      expect(sent.method).toBe('POST');
      expect(sent.headers.get('Content-Type')).toBe('application/json');
      expect(JSON.parse(sent.body!)).toEqual(request);
    });

    it('submit: wait goes into the query', async () => {
      server.on('POST', 'jobs', json(completed(job()), 201, 'Created'));
      const answer = await client.submit(request, 30);
      expect(answer.state).toBe('COMPLETED');
      expect(only().url).toBe(`${API_ROOT}jobs?wait=30`);
    });

    it('cancel: POST jobs/{id}/cancel without a body', async () => {
      const record = job({ id: '5f2c9a1e0b7d4e12', state: 'CANCELLING' });
      server.on('POST', 'jobs/5f2c9a1e0b7d4e12/cancel', json(record));
      await expect(client.cancel('5f2c9a1e0b7d4e12')).resolves.toEqual(record);
      const sent = only();
      expect(sent.method).toBe('POST');
      expect(sent.url).toBe(`${API_ROOT}jobs/5f2c9a1e0b7d4e12/cancel`);
      expect(sent.body).toBeNull();
      expect(sent.headers.has('Content-Type')).toBe(false);
    });

    it('cancel: an id with a slash stays one path segment', async () => {
      server.on('POST', 'jobs/a%2F..%2Fb/cancel', json(job({ id: 'a/../b', state: 'CANCELLED' })));
      await client.cancel('a/../b');
      expect(only().url).toBe(`${API_ROOT}jobs/a%2F..%2Fb/cancel`);
    });

    it('putCredential: PUT credentials/{alias} with provider and secret; the answer is masked', async () => {
      const secret = 'sk-live-5e3b1c0a9f2';
      const info = credential({ alias: 'ionq-main', hint: '…a9f2' });
      server.on('PUT', 'credentials/ionq-main', json(info, 201, 'Created'));
      const answer = await client.putCredential('ionq-main', {
        provider: 'ionq',
        secret: { api_key: secret }
      });
      expect(answer).toEqual(info);
      expect(JSON.stringify(answer)).not.toContain(secret);
      const sent = only();
      expect(sent.method).toBe('PUT');
      expect(sent.url).toBe(`${API_ROOT}credentials/ionq-main`);
      expect(sent.headers.get('Content-Type')).toBe('application/json');
      expect(JSON.parse(sent.body!)).toEqual({ provider: 'ionq', secret: { api_key: secret } });
    });

    it('putCredential: the alias is escaped', async () => {
      server.on('PUT', 'credentials/team%20ibm%2Fprod', json(credential({ alias: 'x' })));
      await client.putCredential('team ibm/prod', {
        provider: 'ibm',
        secret: { token: 't0k3n', channel: 'ibm_quantum_platform', instance: '' }
      });
      const sent = only();
      expect(sent.url).toBe(`${API_ROOT}credentials/team%20ibm%2Fprod`);
      expect(JSON.parse(sent.body!)).toEqual({
        provider: 'ibm',
        secret: { token: 't0k3n', channel: 'ibm_quantum_platform', instance: '' }
      });
    });

    it('deleteCredential: DELETE credentials/{alias}; 204 without a body resolves to undefined', async () => {
      server.on(
        'DELETE',
        'credentials/ionq-main',
        new Response(null, { status: 204, statusText: 'No Content' })
      );
      await expect(client.deleteCredential('ionq-main')).resolves.toBeUndefined();
      const sent = only();
      expect(sent.method).toBe('DELETE');
      expect(sent.url).toBe(`${API_ROOT}credentials/ionq-main`);
      expect(sent.body).toBeNull();
    });

    it('testCredential: POST credentials/{alias}/test answers what the provider said', async () => {
      const answer = {
        alias: 'ibm.prod',
        ok: false,
        message: 'IBM Quantum refused the token (401)'
      };
      server.on('POST', 'credentials/ibm.prod/test', json(answer));
      await expect(client.testCredential('ibm.prod')).resolves.toEqual(answer);
      const sent = only();
      expect(sent.method).toBe('POST');
      expect(sent.url).toBe(`${API_ROOT}credentials/ibm.prod/test`);
      expect(sent.body).toBeNull();
    });

    it('setBudget: PUT budget with the limits as JSON, answers the budgets', async () => {
      const list = [
        budget({
          shots_per_day: {
            limit: 5000,
            used: 0,
            remaining: 5000,
            period_start: '2026-11-26T00:00:00Z'
          }
        })
      ];
      server.on('PUT', 'budget', json(list));
      await expect(client.setBudget({ backend: null, shots_per_day: 5000 })).resolves.toEqual(list);
      const sent = only();
      expect(sent.method).toBe('PUT');
      expect(sent.headers.get('Content-Type')).toBe('application/json');
      expect(JSON.parse(sent.body!)).toEqual({ backend: null, shots_per_day: 5000 });
    });

    it('estimate: POST estimate with the request as JSON', async () => {
      server.on('POST', 'estimate', json(ESTIMATE));
      const body = { backend: 'ionq', circuits: [BELL_QASM2], shots: 1000 };
      await expect(client.estimate(body)).resolves.toEqual(ESTIMATE);
      const sent = only();
      expect(sent.url).toBe(`${API_ROOT}estimate`);
      expect(sent.method).toBe('POST');
      expect(JSON.parse(sent.body!)).toEqual(body);
    });
  });

  describe('pipelines', () => {
    it('pipelines: GET pipelines, unwrapping {pipelines}', async () => {
      const saved = [pipeline(), pipeline({ id: 'a1b2c3d4e5f60002', name: 'weekly' })];
      server.on('GET', 'pipelines', json({ pipelines: saved }));
      await expect(client.pipelines()).resolves.toEqual(saved);
      const sent = only();
      expect(sent.method).toBe('GET');
      expect(sent.url).toBe(`${API_ROOT}pipelines`);
    });

    it('pipeline: GET pipelines/{name}, the name escaped as one segment', async () => {
      server.on('GET', 'pipelines/night%2Fly%20v2', json(pipeline({ name: 'night/ly v2' })));
      await expect(client.pipeline('night/ly v2')).resolves.toEqual(
        pipeline({ name: 'night/ly v2' })
      );
      expect(only().url).toBe(`${API_ROOT}pipelines/night%2Fly%20v2`);
    });

    it('pausePipeline and resumePipeline: POST .../pause and .../resume without a body', async () => {
      const paused = pipeline({ schedule: { ...pipeline().schedule!, paused: true } });
      server.on('POST', 'pipelines/nightly/pause', json(paused));
      server.on('POST', 'pipelines/nightly/resume', json(pipeline()));
      await expect(client.pausePipeline('nightly')).resolves.toEqual(paused);
      await expect(client.resumePipeline('nightly')).resolves.toEqual(pipeline());
      expect(server.log()).toEqual([
        'POST pipelines/nightly/pause',
        'POST pipelines/nightly/resume'
      ]);
      expect(server.requests.map(r => r.body)).toEqual([null, null]);
    });

    it('runPipeline: POST pipelines/{name}/runs; the 202 answer is the QUEUED run', async () => {
      const queued = pipelineRun({ state: 'QUEUED', started_at: null, finished_at: null });
      server.on('POST', 'pipelines/nightly/runs', json(queued, 202, 'Accepted'));
      await expect(client.runPipeline('nightly')).resolves.toEqual(queued);
      const sent = only();
      expect(sent.method).toBe('POST');
      expect(sent.url).toBe(`${API_ROOT}pipelines/nightly/runs`);
    });

    it('deletePipeline: DELETE pipelines/{name}; 204 resolves to undefined', async () => {
      server.on('DELETE', 'pipelines/nightly', new Response(null, { status: 204 }));
      await expect(client.deletePipeline('nightly')).resolves.toBeUndefined();
      expect(only().method).toBe('DELETE');
    });

    it('pipelineRuns: state, pipeline, limit and cursor go into the query', async () => {
      const page = { pipeline_runs: [pipelineRun()], next: 'abc' };
      server.on('GET', 'pipeline-runs', json(page));
      await expect(client.pipelineRuns()).resolves.toEqual(page);
      await client.pipelineRuns({ state: 'FAILED', pipeline: 'nightly', limit: 5, cursor: 'abc' });
      await client.pipelineRuns({ state: '', pipeline: undefined, cursor: null });
      expect(server.log()).toEqual([
        'GET pipeline-runs',
        'GET pipeline-runs?state=FAILED&pipeline=nightly&limit=5&cursor=abc',
        'GET pipeline-runs'
      ]);
    });

    it('pipelineRun: GET pipeline-runs/{id}', async () => {
      server.on('GET', 'pipeline-runs/7c1e5a9b', json(pipelineRun()));
      await expect(client.pipelineRun('7c1e5a9b')).resolves.toEqual(pipelineRun());
      expect(only().url).toBe(`${API_ROOT}pipeline-runs/7c1e5a9b`);
    });

    it('an unknown pipeline is a 404 QmlopsApiError with its code and one line', async () => {
      server.on(
        'POST',
        'pipelines/nope/pause',
        apiError(404, 'pipeline_not_found', "no saved pipeline 'nope'")
      );
      const error = await rejection(client.pausePipeline('nope'));
      expect(error.status).toBe(404);
      expect(error.code).toBe('pipeline_not_found');
      expect(error.message).toBe("no saved pipeline 'nope'");
    });

    it('a bad state filter is a 400 QmlopsApiError', async () => {
      server.on(
        'GET',
        'pipeline-runs',
        apiError(400, 'invalid_request', "unknown pipeline run state 'DONE'")
      );
      const error = await rejection(client.pipelineRuns({ state: 'DONE' as never }));
      expect(error.status).toBe(400);
      expect(error.code).toBe('invalid_request');
    });
  });

  describe('mlflowUrl', () => {
    it('is the proxied MLflow UI under the base URL', () => {
      expect(client.mlflowUrl()).toBe(`${BASE_URL}mlflow/`);
      expect(server.requests).toHaveLength(0);
    });

    it("opens a run's page", () => {
      expect(
        client.mlflowUrl({ experiment_id: '4', run_id: 'a3f0c2d4e5b6478899aabbccddeeff00' })
      ).toBe(
        'http://127.0.0.1:8888/user/ada/mlflow/#/experiments/4/runs/a3f0c2d4e5b6478899aabbccddeeff00'
      );
      expect(client.mlflowUrl({ experiment_id: 'a b', run_id: 'c/d' })).toBe(
        'http://127.0.0.1:8888/user/ada/mlflow/#/experiments/a%20b/runs/c%2Fd'
      );
    });

    it('follows the base URL of the settings', () => {
      const root = new QmlopsClient(
        ServerConnection.makeSettings({ baseUrl: 'http://localhost:8888/' })
      );
      expect(root.mlflowUrl()).toBe('http://localhost:8888/mlflow/');
    });
  });

  describe('errors', () => {
    it.each([
      [
        400,
        'Bad Request',
        'POST',
        'jobs',
        'invalid_circuit',
        'circuit 0: line 5: undefined gate "cxx"'
      ],
      [
        404,
        'Not Found',
        'GET',
        'jobs/0000000000000000',
        'job_not_found',
        'no job 0000000000000000'
      ],
      [
        409,
        'Conflict',
        'POST',
        'jobs/5f2c9a1e0b7d4e12/cancel',
        'illegal_transition',
        'job 5f2c9a1e0b7d4e12 is COMPLETED: it cannot be cancelled'
      ],
      [
        422,
        'Unprocessable Entity',
        'POST',
        'estimate',
        'budget_exceeded',
        'over the budget of ionq: 12.00 of 10.00 USD this month'
      ],
      [
        503,
        'Service Unavailable',
        'GET',
        'backends',
        'not_ready',
        'qmlops is starting; try again in a moment'
      ]
    ])(
      '%i %s → QmlopsApiError(status, code, message)',
      async (status, statusText, method, route, code, message) => {
        server.on(method, route, apiError(status, code, message, statusText));
        const call =
          route === 'jobs'
            ? client.submit({ backend: 'aer', circuits: ['OPENQASM 2.0;'], shots: 10 })
            : route === 'estimate'
              ? client.estimate({ backend: 'ionq', circuits: [BELL_QASM2], shots: 1000 })
              : route === 'backends'
                ? client.backends()
                : route.endsWith('/cancel')
                  ? client.cancel('5f2c9a1e0b7d4e12')
                  : client.job('0000000000000000');
        const error = await rejection(call);
        expect(error.status).toBe(status);
        expect(error.code).toBe(code);
        expect(error.message).toBe(message);
        expect(error.name).toBe('QmlopsApiError');
        expect(error).toBeInstanceOf(Error);
        expect(error.notReady).toBe(status === 503);
      }
    );

    it('a 404 credential_not_found on delete names the credential', async () => {
      server.on(
        'DELETE',
        'credentials/gone',
        apiError(404, 'credential_not_found', 'no credential "gone"')
      );
      const error = await rejection(client.deleteCredential('gone'));
      expect([error.status, error.code, error.message]).toEqual([
        404,
        'credential_not_found',
        'no credential "gone"'
      ]);
    });

    it('a 404 without a JSON body: the server extension is not enabled', async () => {
      server.on(
        'GET',
        'backends',
        new Response('<html><title>404: Not Found</title><body>404 : Not Found</body></html>', {
          status: 404,
          statusText: 'Not Found',
          headers: { 'Content-Type': 'text/html' }
        })
      );
      const error = await rejection(client.backends());
      expect(error.status).toBe(404);
      expect(error.code).toBe('not_found');
      expect(error.message).toBe(NOT_ENABLED);

      server.on('GET', 'budget', new Response('', { status: 404, statusText: 'Not Found' }));
      const empty = await rejection(client.budget());
      expect([empty.status, empty.code, empty.message]).toEqual([404, 'not_found', NOT_ENABLED]);
    });

    it('an error without a JSON body: http_error with the status line', async () => {
      server.on(
        'GET',
        'runs',
        new Response('Traceback (most recent call last): ...', {
          status: 500,
          statusText: 'Internal Server Error'
        })
      );
      const error = await rejection(client.runs());
      expect([error.status, error.code, error.message]).toEqual([
        500,
        'http_error',
        '500 Internal Server Error'
      ]);
      expect(error.notReady).toBe(false);

      server.on('GET', 'budget', new Response('', { status: 502 }));
      const bare = await rejection(client.budget());
      expect([bare.status, bare.code, bare.message]).toEqual([502, 'http_error', '502 error']);
    });

    it('an error body with a code but no message keeps the code and says the status', async () => {
      server.on('GET', 'credentials', json({ error: 'forbidden', message: '' }, 403, 'Forbidden'));
      const error = await rejection(client.credentials());
      expect([error.status, error.code, error.message]).toEqual([
        403,
        'forbidden',
        '403 Forbidden'
      ]);
    });

    it('a network failure: status 0, network_error', async () => {
      server.on(
        'GET',
        'backends',
        new ServerConnection.NetworkError(new TypeError('Failed to fetch'))
      );
      const error = await rejection(client.backends());
      expect(error.status).toBe(0);
      expect(error.code).toBe('network_error');
      expect(error.message).toBe('The Jupyter server could not be reached: Failed to fetch');
      expect(error.notReady).toBe(false);
    });

    it('a 200 that is not JSON: bad_response', async () => {
      server.on(
        'GET',
        'jobs',
        new Response('<!DOCTYPE html><html><body>Sign in</body></html>', {
          status: 200,
          headers: { 'Content-Type': 'text/html' }
        })
      );
      const error = await rejection(client.jobs());
      expect(error.status).toBe(200);
      expect(error.code).toBe('bad_response');
      expect(error.message).toBe('The server answered jobs with something that is not JSON.');
    });
  });
});

describe('requestAPI through the real ServerConnection', () => {
  const calls: Request[] = [];
  let fetchAnswer: () => Promise<Response>;

  function connection(): ServerConnection.ISettings {
    return ServerConnection.makeSettings({
      baseUrl: BASE_URL,
      token: 'test-token',
      fetch: (input: RequestInfo | URL) => {
        calls.push(input as Request);
        return fetchAnswer();
      }
    });
  }

  beforeEach(() => {
    calls.length = 0;
  });

  it("sends the page's token and keeps the JSON content type and body", async () => {
    fetchAnswer = async () =>
      json(credential({ alias: 'aws-dev', provider: 'aws', hint: '…Q7XZ' }));
    const client = new QmlopsClient(connection());
    const info = await client.putCredential('aws-dev', {
      provider: 'aws',
      secret: {
        aws_access_key_id: 'AKIAEXAMPLE0Q7XZ',
        aws_secret_access_key: 'wJalrEXAMPLE',
        region: 'us-east-1'
      }
    });
    expect(info.hint).toBe('…Q7XZ');
    expect(calls).toHaveLength(1);
    const request = calls[0];
    expect(new URL(request.url).pathname).toBe(`/user/ada/${API_PATH}/credentials/aws-dev`);
    expect(request.method).toBe('PUT');
    expect(request.headers.get('Authorization')).toBe('token test-token');
    expect(request.headers.get('Content-Type')).toBe('application/json');
    expect(JSON.parse(await request.text())).toEqual({
      provider: 'aws',
      secret: {
        aws_access_key_id: 'AKIAEXAMPLE0Q7XZ',
        aws_secret_access_key: 'wJalrEXAMPLE',
        region: 'us-east-1'
      }
    });
  });

  it('a fetch that fails is a network_error', async () => {
    fetchAnswer = () => Promise.reject(new TypeError('fetch failed'));
    const error = await rejection(requestAPI(connection(), 'health'));
    expect([error.status, error.code, error.message]).toEqual([
      0,
      'network_error',
      'The Jupyter server could not be reached: fetch failed'
    ]);
  });
});
