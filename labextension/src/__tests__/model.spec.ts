/**
 * The live model: what a refresh fills in, how `job_status` events change the jobs list, the
 * actions, and the poll that backs off when the server fails. The Jupyter server is mocked at
 * `ServerConnection.makeRequest`; events arrive on a real lumino Stream, as the server's event
 * bus delivers them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Event } from '@jupyterlab/services';
import { Stream } from '@lumino/signaling';
import { QmlopsApiError, QmlopsClient } from '../api';
import {
  BELL_QASM3,
  JOB_LIMIT,
  MAX_JOBS,
  QmlopsModel,
  asJobStatus,
  asPipelineStatus,
  describeError
} from '../model';
import { IBudgetStatus, IJobRecord, JOB_STATUS_SCHEMA } from '../tokens';
import {
  AER,
  DASHBOARDS,
  DASHBOARDS_WITHOUT_VOILA,
  Deferred,
  FakeServer,
  IONQ,
  ISentRequest,
  apiError,
  budget,
  completed,
  credential,
  emission,
  job,
  json,
  pipeline,
  pipelineEmission,
  pipelineRun,
  pipelineStatus,
  run,
  settings,
  settle,
  status
} from './fixtures';

/** Stands in for `serviceManager.events`: only its stream is used. */
class FakeEvents {
  readonly stream = new Stream<FakeEvents, Event.Emission>(this);
  asManager(): Event.IManager {
    return this as unknown as Event.IManager;
  }
}

// The jobs list as the server answers it (newest first).
const JOB_RUNNING = job({
  id: '5f2c9a1e0b7d0a01',
  name: 'vqe-step-3',
  state: 'RUNNING',
  created_at: '2026-11-26T15:30:00.250000Z'
});
const JOB_QUEUED = job({
  id: '5f2c9a1e0b7d0a02',
  name: 'qaoa-maxcut',
  backend: 'ionq',
  state: 'QUEUED',
  queue_position: 7,
  created_at: '2026-11-26T15:20:00.000000Z',
  updated_at: '2026-11-26T15:20:04.000000Z'
});
const JOB_DONE = completed(
  job({ id: '5f2c9a1e0b7d0a03', name: 'bell', created_at: '2026-11-26T15:10:00.000000Z' }),
  '2026-11-26T15:10:05.000000Z'
);
const JOBS = [JOB_RUNNING, JOB_QUEUED, JOB_DONE];

/** Routes answering everything a refresh reads. */
function answerEverything(server: FakeServer, jobs: IJobRecord[] = JOBS): void {
  server
    .on('GET', 'backends', json([AER, IONQ]))
    .on('GET', 'credentials', json([credential()]))
    .on('GET', 'jobs', json({ jobs, next: null }))
    .on('GET', 'runs', json({ runs: [run()] }))
    .on('GET', 'budget', json([budget()]))
    .on('GET', 'pipelines', json({ pipelines: [] }))
    .on('GET', 'pipeline-runs', json({ pipeline_runs: [], next: null }))
    .on('GET', 'dashboards', json(DASHBOARDS));
}

function ids(model: QmlopsModel): string[] {
  return model.jobs.data.map(j => j.id);
}

function listed(model: QmlopsModel, id: string): IJobRecord {
  const found = model.jobs.data.find(j => j.id === id);
  if (!found) {
    throw new Error(`job ${id} is not listed (${ids(model).join(', ')})`);
  }
  return found;
}

describe('describeError and asJobStatus', () => {
  it('describeError says the API message, or the error message', () => {
    expect(describeError(new QmlopsApiError(503, 'not_ready', 'qmlops is starting'))).toBe(
      'qmlops is starting'
    );
    expect(describeError(new TypeError('x is undefined'))).toBe('x is undefined');
    expect(describeError('plain text')).toBe('plain text');
  });

  it('asJobStatus takes job_status events by schema_id or __schema__, nothing else', () => {
    const event = status(JOB_RUNNING, 'COMPLETED', 9);
    expect(asJobStatus(emission(event, 'schema_id'))).toMatchObject(event);
    expect(asJobStatus(emission(event, '__schema__'))).toMatchObject(event);
    expect(
      asJobStatus({
        ...event,
        schema_id: 'https://events.jupyter.org/jupyter_server/contents_service/v1'
      })
    ).toBeNull();
    expect(
      asJobStatus({ ...event, schema_id: 'https://events.qmlops-jupyter.dev/job_status/v2' })
    ).toBeNull();
    expect(asJobStatus({ ...event })).toBeNull();
    expect(asJobStatus({ schema_id: JOB_STATUS_SCHEMA, new_state: 'RUNNING', seq: 3 })).toBeNull();
  });

  it('the test circuit is the Bell pair of the API example', () => {
    const spec = JSON.parse(
      fs.readFileSync(path.join(__dirname, '../../../qmlops_jupyter/server/openapi.json'), 'utf-8')
    );
    expect(BELL_QASM3).toBe(spec.components.schemas.JobRequest.example.circuits[0]);
  });
});

describe('QmlopsModel', () => {
  let server: FakeServer;
  let events: FakeEvents;
  let model: QmlopsModel;
  let changes: number;
  let jobChanges: IJobRecord[];

  function create(options: { events?: boolean; refreshInterval?: number } = {}): QmlopsModel {
    model?.dispose();
    model = new QmlopsModel({
      client: new QmlopsClient(settings()),
      events: options.events === false ? null : events.asManager(),
      refreshInterval: options.refreshInterval,
      autoStart: false
    });
    changes = 0;
    jobChanges = [];
    model.changed.connect(() => {
      changes += 1;
    });
    model.jobChanged.connect((_, record) => {
      jobChanges.push(record);
    });
    return model;
  }

  /** A model that has read everything once, with the request log emptied. */
  async function loaded(
    options: { events?: boolean; refreshInterval?: number } = {}
  ): Promise<QmlopsModel> {
    answerEverything(server);
    create(options);
    await model.refresh();
    server.clear();
    changes = 0;
    jobChanges = [];
    return model;
  }

  beforeEach(() => {
    server = new FakeServer();
    events = new FakeEvents();
  });

  afterEach(() => {
    model?.dispose();
    server.restore();
    jest.useRealTimers();
    jest.restoreAllMocks();
  });

  describe('refresh', () => {
    it('fills backends, credentials, jobs, runs and budget; every part ready', async () => {
      answerEverything(server);
      create();
      for (const part of [
        model.backends,
        model.credentials,
        model.jobs,
        model.runs,
        model.budget
      ]) {
        expect(part).toEqual({ status: 'idle', data: [], error: null });
      }
      await model.refresh();
      expect(model.backends).toEqual({ status: 'ready', data: [AER, IONQ], error: null });
      expect(model.credentials).toEqual({ status: 'ready', data: [credential()], error: null });
      expect(model.jobs).toEqual({ status: 'ready', data: JOBS, error: null });
      expect(model.runs).toEqual({ status: 'ready', data: [run()], error: null });
      expect(model.budget).toEqual({ status: 'ready', data: [budget()], error: null });
      expect(server.log().sort()).toEqual([
        'GET backends',
        'GET budget',
        'GET credentials',
        'GET dashboards',
        'GET jobs?limit=50',
        'GET pipeline-runs?limit=20',
        'GET pipelines',
        'GET runs?limit=20'
      ]);
      expect(model.pipelines).toEqual({ status: 'ready', data: [], error: null });
      expect(model.pipelineRuns).toEqual({ status: 'ready', data: [], error: null });
      expect(model.dashboards).toEqual({
        status: 'ready',
        data: DASHBOARDS.dashboards,
        error: null
      });
      expect(model.dashboardsHint).toBeNull();
      expect(model.live).toBe(true);
      expect(changes).toBeGreaterThanOrEqual(5);
    });

    it('a part is loading while its answer is on its way', async () => {
      answerEverything(server);
      const held = new Deferred<Response>();
      server.on('GET', 'jobs', () => held.promise);
      create();
      const refreshing = model.refresh();
      await settle();
      expect(model.jobs.status).toBe('loading');
      expect(model.backends.status).toBe('ready');
      held.resolve(json({ jobs: [JOB_QUEUED], next: null }));
      await refreshing;
      expect(model.jobs).toEqual({ status: 'ready', data: [JOB_QUEUED], error: null });
    });

    it('a failing part says why; the other parts are ready', async () => {
      answerEverything(server);
      server.on(
        'GET',
        'runs',
        apiError(503, 'tracking_unavailable', 'MLflow tracking is off: no tracking URI')
      );
      server.on('GET', 'credentials', apiError(503, 'vault_error', 'the vault key cannot be read'));
      create();
      await model.refresh();
      expect(model.runs).toEqual({
        status: 'error',
        data: [],
        error: 'MLflow tracking is off: no tracking URI'
      });
      expect(model.credentials).toEqual({
        status: 'error',
        data: [],
        error: 'the vault key cannot be read'
      });
      expect(model.backends.status).toBe('ready');
      expect(model.jobs.status).toBe('ready');
      expect(model.budget.status).toBe('ready');
      expect(model.budget.data).toEqual([budget()]);
    });

    it('when the jobs fail, every other part is still settled when refresh() is', async () => {
      answerEverything(server);
      server.on(
        'GET',
        'jobs',
        apiError(503, 'not_ready', 'qmlops is starting; try again in a moment')
      );
      create();
      await model.refresh().catch(() => undefined);
      expect(model.jobs).toEqual({
        status: 'error',
        data: [],
        error: 'qmlops is starting; try again in a moment'
      });
      expect([
        model.backends.status,
        model.credentials.status,
        model.runs.status,
        model.budget.status
      ]).toEqual(['ready', 'ready', 'ready', 'ready']);
    });

    it('an error after an answer keeps the data it had; the next answer clears the error', async () => {
      await loaded();
      server.on('GET', 'budget', apiError(503, 'not_ready', 'the ledger is locked'));
      await model.refreshBudget();
      expect(model.budget).toEqual({
        status: 'error',
        data: [budget()],
        error: 'the ledger is locked'
      });
      const fresh = [budget({ backend: 'ionq' })];
      server.on('GET', 'budget', json(fresh));
      await model.refreshBudget();
      expect(model.budget).toEqual({ status: 'ready', data: fresh, error: null });
    });

    it('a network failure is the error of every part', async () => {
      create();
      server.spy.mockRejectedValue(new TypeError('Failed to fetch'));
      await model.refresh().catch(() => undefined);
      await settle();
      const message = 'The Jupyter server could not be reached: Failed to fetch';
      for (const part of [
        model.backends,
        model.credentials,
        model.jobs,
        model.runs,
        model.budget
      ]) {
        expect(part).toEqual({ status: 'error', data: [], error: message });
      }
    });
  });

  describe('setFilter', () => {
    it('reads the jobs again with the filter in the query', async () => {
      await loaded();
      server.on('GET', 'jobs', (request: ISentRequest) =>
        json({
          jobs: JOBS.filter(
            j =>
              (!request.query.get('state') || j.state === request.query.get('state')) &&
              (!request.query.get('backend') || j.backend === request.query.get('backend'))
          ),
          next: null
        })
      );
      model.setFilter({ state: 'QUEUED' });
      expect(model.filter).toEqual({ state: 'QUEUED', backend: '' });
      await settle();
      expect(server.log()).toEqual(['GET jobs?state=QUEUED&limit=50']);
      expect(ids(model)).toEqual([JOB_QUEUED.id]);

      model.setFilter({ backend: 'aer' });
      await settle();
      expect(server.log()[1]).toBe('GET jobs?state=QUEUED&backend=aer&limit=50');
      expect(model.filter).toEqual({ state: 'QUEUED', backend: 'aer' });
      expect(model.jobs).toEqual({ status: 'ready', data: [], error: null });

      model.setFilter({ state: '', backend: '' });
      await settle();
      expect(server.log()[2]).toBe(`GET jobs?limit=${JOB_LIMIT}`);
      expect(ids(model)).toEqual(JOBS.map(j => j.id));
    });

    it('the filter it gives is a copy', async () => {
      await loaded();
      const filter = model.filter;
      filter.state = 'FAILED';
      expect(model.filter).toEqual({ state: '', backend: '' });
    });

    it('an earlier filter answering late does not replace the later one', async () => {
      await loaded();
      const slow = new Deferred<Response>();
      server.on('GET', 'jobs', (request: ISentRequest) =>
        request.query.get('state') === 'QUEUED'
          ? slow.promise
          : json({ jobs: [JOB_DONE], next: null })
      );
      model.setFilter({ state: 'QUEUED' });
      model.setFilter({ state: 'COMPLETED' });
      await settle();
      expect(ids(model)).toEqual([JOB_DONE.id]);
      slow.resolve(json({ jobs: [JOB_QUEUED], next: null }));
      await settle();
      expect(ids(model)).toEqual([JOB_DONE.id]);
      expect(model.jobs.status).toBe('ready');
    });

    it('a failing filtered read shows the error (and leaves no rejection unhandled)', async () => {
      await loaded();
      server.on('GET', 'jobs', apiError(400, 'invalid_request', 'state: not a job state'));
      model.setFilter({ state: 'RUNNING' });
      await settle();
      expect(model.jobs.status).toBe('error');
      expect(model.jobs.error).toBe('state: not a job state');
    });
  });

  describe('older jobs', () => {
    it('hasMoreJobs says whether the server has a next page', async () => {
      answerEverything(server);
      server.on('GET', 'jobs', json({ jobs: JOBS, next: 'eyJvIjo1MH0=' }));
      create();
      expect(model.hasMoreJobs).toBe(false);
      await model.refresh();
      expect(model.hasMoreJobs).toBe(true);
      server.on('GET', 'jobs', json({ jobs: JOBS, next: null }));
      await model.refreshJobs();
      expect(model.hasMoreJobs).toBe(false);
    });

    it('loadMoreJobs lists 50 more each time, with the filter, up to the 1000 the API allows', async () => {
      await loaded();
      model.setFilter({ backend: 'ionq' });
      await settle();
      server.clear();
      await model.loadMoreJobs();
      expect(server.log()).toEqual([`GET jobs?backend=ionq&limit=${2 * JOB_LIMIT}`]);
      await model.loadMoreJobs();
      expect(server.log()[1]).toBe('GET jobs?backend=ionq&limit=150');
      for (let i = 0; i < 20; i++) {
        await model.loadMoreJobs();
      }
      const limits = server.requests.map(r => Number(r.query.get('limit')));
      expect(Math.max(...limits)).toBe(MAX_JOBS);
      expect(limits.slice(-3)).toEqual([MAX_JOBS, MAX_JOBS, MAX_JOBS]);
      // The poll reads as many as are shown.
      server.clear();
      await model.refreshJobs();
      expect(server.log()).toEqual([`GET jobs?backend=ionq&limit=${MAX_JOBS}`]);
    });

    it('the jobs an event inserts do not grow the list past what is shown', async () => {
      const many = Array.from({ length: JOB_LIMIT }, (_, i) =>
        job({
          id: `5f2c9a1e0b7e${(0x1000 + i).toString(16)}`,
          state: 'COMPLETED',
          created_at: `2026-11-26T14:${String(i).padStart(2, '0')}:00.000000Z`
        })
      ).reverse();
      answerEverything(server, many);
      create();
      await model.refresh();
      const newest = job({
        id: '5f2c9a1e0b7e2000',
        state: 'CREATED',
        created_at: '2026-11-26T16:00:00.000000Z'
      });
      server.on('GET', `jobs/${newest.id}`, json(newest));
      model.handleEvent(status(newest, 'CREATED', 300));
      await settle();
      expect(model.jobs.data).toHaveLength(JOB_LIMIT);
      expect(ids(model)[0]).toBe(newest.id);
      expect(ids(model)).not.toContain(many[many.length - 1].id);
    });
  });

  describe('handleEvent', () => {
    it("changes a listed job's state in place, without reading anything", async () => {
      await loaded();
      const event = status(JOB_QUEUED, 'RUNNING', 41, '2026-11-26T15:31:00.000000+00:00');
      model.handleEvent(event);
      expect(ids(model)).toEqual(JOBS.map(j => j.id));
      expect(model.jobs.data[1]).toEqual({
        ...JOB_QUEUED,
        state: 'RUNNING',
        updated_at: '2026-11-26T15:31:00.000000+00:00'
      });
      expect(jobChanges.map(j => [j.id, j.state])).toEqual([[JOB_QUEUED.id, 'RUNNING']]);
      expect(changes).toBeGreaterThanOrEqual(1);
      await settle();
      expect(server.requests).toHaveLength(0);
      expect(model.jobs.data[1].state).toBe('RUNNING');
    });

    it('ignores a repeated or older seq', async () => {
      await loaded();
      model.handleEvent(status(JOB_RUNNING, 'CANCELLING', 50));
      jobChanges = [];
      changes = 0;
      model.handleEvent(status(JOB_RUNNING, 'CANCELLING', 50));
      model.handleEvent({ ...status(JOB_RUNNING, 'RUNNING', 49), old_state: 'QUEUED' });
      await settle();
      expect(listed(model, JOB_RUNNING.id).state).toBe('CANCELLING');
      expect(jobChanges).toEqual([]);
      expect(changes).toBe(0);
      expect(server.requests).toHaveLength(0);
      // A later seq applies again.
      model.handleEvent(status(JOB_RUNNING, 'NEEDS_ATTENTION', 51));
      expect(listed(model, JOB_RUNNING.id).state).toBe('NEEDS_ATTENTION');
    });

    it('the seq of one job does not hide the events of another', async () => {
      await loaded();
      model.handleEvent(status(JOB_RUNNING, 'CANCELLING', 90));
      model.handleEvent(status(JOB_RUNNING, 'RUNNING', 12)); // older, ignored
      model.handleEvent({
        ...status(JOB_DONE, 'COMPLETED', 12),
        job_id: JOB_QUEUED.id,
        new_state: 'RUNNING'
      });
      expect(listed(model, JOB_RUNNING.id).state).toBe('CANCELLING');
      expect(listed(model, JOB_QUEUED.id).state).toBe('RUNNING');
    });

    it('reads an unknown job and inserts it newest first', async () => {
      await loaded();
      const newest = job({
        id: '5f2c9a1e0b7d0b01',
        state: 'RUNNING',
        created_at: '2026-11-26T15:40:00.000000Z',
        updated_at: '2026-11-26T15:40:01.000000Z'
      });
      const between = job({
        id: '5f2c9a1e0b7d0b02',
        state: 'QUEUED',
        created_at: '2026-11-26T15:25:00.000000Z',
        updated_at: '2026-11-26T15:25:01.000000Z'
      });
      server.on('GET', `jobs/${newest.id}`, json(newest));
      server.on('GET', `jobs/${between.id}`, json(between));

      model.handleEvent(status(newest, 'RUNNING', 60, '2026-11-26T15:40:01.000000+00:00'));
      await settle();
      expect(server.log()).toEqual([`GET jobs/${newest.id}`]);
      expect(ids(model)).toEqual([newest.id, JOB_RUNNING.id, JOB_QUEUED.id, JOB_DONE.id]);
      expect(model.jobs.data[0]).toEqual(newest);

      model.handleEvent(status(between, 'QUEUED', 61, '2026-11-26T15:25:01.000000+00:00'));
      await settle();
      expect(ids(model)).toEqual([
        newest.id,
        JOB_RUNNING.id,
        between.id,
        JOB_QUEUED.id,
        JOB_DONE.id
      ]);
      expect(jobChanges.map(j => j.id)).toEqual([newest.id, between.id]);
    });

    it('an unknown job that does not pass the filter is read but not listed', async () => {
      await loaded();
      server.on('GET', 'jobs', json({ jobs: [JOB_QUEUED], next: null }));
      model.setFilter({ backend: 'ionq' });
      await settle();
      server.clear();
      const onAer = job({
        id: '5f2c9a1e0b7d0c01',
        backend: 'aer',
        state: 'RUNNING',
        created_at: '2026-11-26T15:45:00.000000Z'
      });
      const onIonq = job({
        id: '5f2c9a1e0b7d0c02',
        backend: 'ionq',
        state: 'QUEUED',
        created_at: '2026-11-26T15:46:00.000000Z'
      });
      server.on('GET', `jobs/${onAer.id}`, json(onAer));
      server.on('GET', `jobs/${onIonq.id}`, json(onIonq));
      model.handleEvent(status(onAer, 'RUNNING', 70));
      model.handleEvent(status(onIonq, 'QUEUED', 71));
      await settle();
      expect(server.log().sort()).toEqual([`GET jobs/${onAer.id}`, `GET jobs/${onIonq.id}`]);
      expect(ids(model)).toEqual([onIonq.id, JOB_QUEUED.id]);
    });

    it('with a state filter, a job read again is listed only while it has that state', async () => {
      await loaded();
      server.on('GET', 'jobs', json({ jobs: [JOB_RUNNING], next: null }));
      model.setFilter({ state: 'RUNNING' });
      await settle();
      // An unknown job that is QUEUED is read, and not listed under RUNNING.
      const queued = job({
        id: '5f2c9a1e0b7d0c11',
        state: 'QUEUED',
        created_at: '2026-11-26T15:47:00.000000Z'
      });
      server.on('GET', `jobs/${queued.id}`, json(queued));
      model.handleEvent(status(queued, 'QUEUED', 72));
      await settle();
      expect(server.sent('GET', `jobs/${queued.id}`)).toHaveLength(1);
      expect(ids(model)).toEqual([JOB_RUNNING.id]);
      // The listed job finishes: once read again it leaves the RUNNING list.
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(completed(JOB_RUNNING)));
      model.handleEvent(status(JOB_RUNNING, 'COMPLETED', 73));
      await settle();
      expect(ids(model)).toEqual([]);
    });

    it('a job that reaches a terminal state is read again: its result appears', async () => {
      await loaded();
      const done = completed(JOB_RUNNING, '2026-11-26T15:30:03.750000Z');
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(done));
      model.handleEvent(status(JOB_RUNNING, 'COMPLETED', 80, '2026-11-26T15:30:03.750000+00:00'));
      // The state changes at once ...
      expect(listed(model, JOB_RUNNING.id).state).toBe('COMPLETED');
      expect(listed(model, JOB_RUNNING.id).result).toBeNull();
      await settle();
      // ... and the record read again brings the counts, cost and run.
      expect(server.log()).toEqual([`GET jobs/${JOB_RUNNING.id}`]);
      const shown = listed(model, JOB_RUNNING.id);
      expect(shown.result?.counts).toEqual([{ '00': 517, '11': 507 }]);
      expect(shown.mlflow_run_id).toBe('a3f0c2d4e5b6478899aabbccddeeff00');
      expect(shown.finished_at).toBe('2026-11-26T15:30:03.750000Z');
      expect(ids(model)).toEqual(JOBS.map(j => j.id));
    });

    it("a finished job's new MLflow run is read into the runs list", async () => {
      await loaded();
      const newRun = run({
        run_id: '0b1c2d3e4f5a46778899aabbccddeeff',
        run_name: 'bell-sweep',
        job_ids: [JOB_RUNNING.id]
      });
      server.on(
        'GET',
        `jobs/${JOB_RUNNING.id}`,
        json({ ...completed(JOB_RUNNING), mlflow_run_id: newRun.run_id })
      );
      server.on('GET', 'runs', json({ runs: [newRun, run()] }));
      model.handleEvent(status(JOB_RUNNING, 'COMPLETED', 85, '2026-11-26T15:30:03.750000+00:00'));
      await settle();
      expect(server.log()).toEqual([`GET jobs/${JOB_RUNNING.id}`, 'GET runs?limit=20']);
      expect(model.runs.data.map(r => r.run_id)).toEqual([newRun.run_id, run().run_id]);
    });

    it('a job that is queued again is read again (its queue position)', async () => {
      await loaded();
      const requeued = {
        ...JOB_RUNNING,
        state: 'QUEUED' as const,
        queue_position: 3,
        updated_at: '2026-11-26T15:32:00.000000Z'
      };
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(requeued));
      model.handleEvent(status(JOB_RUNNING, 'QUEUED', 81, '2026-11-26T15:32:00.000000+00:00'));
      await settle();
      expect(listed(model, JOB_RUNNING.id).queue_position).toBe(3);
    });

    it('a record read before the event landed keeps the state the event said', async () => {
      await loaded();
      // The job was read while still RUNNING; the COMPLETED event is newer than that record.
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(JOB_RUNNING));
      model.handleEvent(status(JOB_RUNNING, 'COMPLETED', 82, '2026-11-26T15:30:03.750000+00:00'));
      await settle();
      expect(listed(model, JOB_RUNNING.id).state).toBe('COMPLETED');
    });

    it('compares the event time and the record time as instants, not as text', async () => {
      await loaded();
      // The server writes event times with isoformat() (+00:00) and records with pydantic (Z);
      // a record updated on a whole second has no fraction: "...:02Z".
      const unknown = job({
        id: '5f2c9a1e0b7d0d01',
        state: 'QUEUED',
        created_at: '2026-11-26T15:29:59.000000Z',
        updated_at: '2026-11-26T15:30:02Z'
      });
      server.on('GET', `jobs/${unknown.id}`, json(unknown));
      model.handleEvent(status(unknown, 'RUNNING', 83, '2026-11-26T15:30:02.250000+00:00'));
      await settle();
      expect(listed(model, unknown.id).state).toBe('RUNNING');
    });

    it('an event during a read of the same job reads it once more afterwards', async () => {
      await loaded();
      const fresh = job({
        id: '5f2c9a1e0b7d0e01',
        state: 'CREATED',
        created_at: '2026-11-26T15:50:00.000000Z',
        updated_at: '2026-11-26T15:50:00.000000Z'
      });
      const first = new Deferred<Response>();
      let reads = 0;
      server.on('GET', `jobs/${fresh.id}`, () => {
        reads += 1;
        return reads === 1 ? first.promise : json(completed(fresh, '2026-11-26T15:50:02.000000Z'));
      });
      model.handleEvent(status(fresh, 'CREATED', 90, '2026-11-26T15:50:00.000000+00:00'));
      await settle();
      model.handleEvent({
        ...status(fresh, 'COMPLETED', 93, '2026-11-26T15:50:02.000000+00:00'),
        old_state: 'RUNNING'
      });
      await settle();
      expect(reads).toBe(1);
      first.resolve(json(fresh));
      await settle();
      expect(reads).toBe(2);
      expect(listed(model, fresh.id).state).toBe('COMPLETED');
      expect(listed(model, fresh.id).result?.shots).toBe(1024);
    });

    it('a job that cannot be read leaves the list as it was', async () => {
      await loaded();
      server.on(
        'GET',
        'jobs/5f2c9a1e0b7d0f01',
        apiError(404, 'job_not_found', 'no job 5f2c9a1e0b7d0f01')
      );
      model.handleEvent({ ...status(JOB_RUNNING, 'RUNNING', 95), job_id: '5f2c9a1e0b7d0f01' });
      await settle();
      expect(server.log()).toEqual(['GET jobs/5f2c9a1e0b7d0f01']);
      expect(model.jobs).toEqual({ status: 'ready', data: JOBS, error: null });
    });

    it('a listed job whose new state leaves the state filter leaves the list', async () => {
      await loaded();
      server.on('GET', 'jobs', json({ jobs: [JOB_RUNNING], next: null }));
      model.setFilter({ state: 'RUNNING' });
      await settle();
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json({ ...JOB_RUNNING, state: 'CANCELLING' }));
      model.handleEvent(status(JOB_RUNNING, 'CANCELLING', 100));
      await settle();
      expect(ids(model)).toEqual([]);
    });

    it('a finished job does not go back to an earlier state on a late event', async () => {
      await loaded();
      // The list (read by a poll) already shows JOB_DONE finished; its RUNNING event arrives late.
      model.handleEvent({
        ...status(JOB_DONE, 'RUNNING', 7, '2026-11-26T15:10:02.000000+00:00'),
        old_state: 'QUEUED'
      });
      await settle();
      expect(listed(model, JOB_DONE.id).state).toBe('COMPLETED');
      expect(model.runningCount).toBe(2);
    });
  });

  describe('events on the stream', () => {
    it('job_status events are applied, by schema_id or __schema__', async () => {
      await loaded();
      events.stream.emit(emission(status(JOB_RUNNING, 'CANCELLING', 110), 'schema_id'));
      expect(listed(model, JOB_RUNNING.id).state).toBe('CANCELLING');
      events.stream.emit(emission(status(JOB_QUEUED, 'RUNNING', 111), '__schema__'));
      expect(listed(model, JOB_QUEUED.id).state).toBe('RUNNING');
    });

    it('other events are ignored', async () => {
      await loaded();
      const data = status(JOB_RUNNING, 'CANCELLING', 120);
      events.stream.emit({
        ...data,
        schema_id: 'https://events.jupyter.org/jupyter_server/kernel_actions/v1'
      } as Event.Emission);
      events.stream.emit({
        ...data,
        schema_id: 'https://events.qmlops-jupyter.dev/job_status/v2'
      } as Event.Emission);
      events.stream.emit({
        schema_id: JOB_STATUS_SCHEMA,
        new_state: 'FAILED',
        seq: 121
      } as Event.Emission);
      await settle();
      expect(model.jobs.data).toEqual(JOBS);
      expect(jobChanges).toEqual([]);
      expect(server.requests).toHaveLength(0);
    });

    it('without an event bus the model is not live and polls only', () => {
      create({ events: false });
      expect(model.live).toBe(false);
      events.stream.emit(emission(status(JOB_RUNNING, 'CANCELLING', 130)));
      expect(model.jobs.data).toEqual([]);
    });
  });

  describe('runningCount and budgetUse', () => {
    it('runningCount counts the jobs not finished, and follows events', async () => {
      const attention = job({
        id: '5f2c9a1e0b7d1a01',
        state: 'NEEDS_ATTENTION',
        created_at: '2026-11-26T15:05:00.000000Z'
      });
      const failed = job({
        id: '5f2c9a1e0b7d1a02',
        state: 'FAILED',
        error: 'provider rejected the job',
        created_at: '2026-11-26T15:04:00.000000Z'
      });
      answerEverything(server, [...JOBS, attention, failed]);
      create();
      expect(model.runningCount).toBe(0);
      await model.refresh();
      expect(model.runningCount).toBe(3); // RUNNING, QUEUED, NEEDS_ATTENTION
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(completed(JOB_RUNNING)));
      model.handleEvent(status(JOB_RUNNING, 'COMPLETED', 140));
      expect(model.runningCount).toBe(2);
      const elsewhere = job({ id: '5f2c9a1e0b7d1a03', state: 'SUBMITTING' });
      server.on('GET', `jobs/${elsewhere.id}`, json(elsewhere));
      model.handleEvent(status(elsewhere, 'SUBMITTING', 141));
      expect(model.runningCount).toBe(3);
      await settle();
      expect(model.runningCount).toBe(3);
    });

    it('a job finished while a filter hides it is no longer counted (polling only)', async () => {
      await loaded({ events: false });
      expect(model.runningCount).toBe(2);
      // The sidebar shows RUNNING jobs only; the running job then finishes (no event bus).
      server.on('GET', 'jobs', (request: ISentRequest) =>
        json({
          jobs:
            request.query.get('state') === 'RUNNING'
              ? []
              : [completed(JOB_RUNNING), JOB_QUEUED, JOB_DONE],
          next: null
        })
      );
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(completed(JOB_RUNNING)));
      model.setFilter({ state: 'RUNNING' });
      await settle();
      await model.refreshJobs();
      await settle();
      expect(model.jobs.data).toEqual([]);
      expect(model.runningCount).toBe(1); // only JOB_QUEUED is unfinished
    });

    it('budgetUse is the largest share used of any limit', async () => {
      const budgets: IBudgetStatus[] = [
        budget(), // shots 40000 / 100000 = 0.4, usd 12.5 / 50 = 0.25
        budget({
          backend: 'ionq',
          shots_per_day: null,
          usd_per_month: {
            limit: 60,
            used: 45,
            remaining: 15,
            period_start: '2026-11-01T00:00:00Z'
          }
        })
      ];
      answerEverything(server);
      server.on('GET', 'budget', json(budgets));
      create();
      expect(model.budgetUse).toBeNull();
      await model.refresh();
      expect(model.budgetUse).toBeCloseTo(0.75, 10);

      server.on('GET', 'budget', json([budgets[0]]));
      await model.refreshBudget();
      expect(model.budgetUse).toBeCloseTo(0.4, 10);
    });

    it('budgetUse: no limits is null; a zero limit is full once anything is used', async () => {
      answerEverything(server);
      server.on('GET', 'budget', json([budget({ shots_per_day: null, usd_per_month: null })]));
      create();
      await model.refresh();
      expect(model.budgetUse).toBeNull();

      const zero = { limit: 0, used: 0, remaining: 0, period_start: '2026-11-26T00:00:00Z' };
      server.on('GET', 'budget', json([budget({ shots_per_day: zero, usd_per_month: null })]));
      await model.refreshBudget();
      expect(model.budgetUse).toBe(0);

      server.on(
        'GET',
        'budget',
        json([budget({ shots_per_day: { ...zero, used: 10 }, usd_per_month: null })])
      );
      await model.refreshBudget();
      expect(model.budgetUse).toBe(1);
    });
  });

  describe('actions', () => {
    it('cancelJob posts the cancel and shows the answer in place', async () => {
      await loaded();
      const cancelling = {
        ...JOB_QUEUED,
        state: 'CANCELLING' as const,
        updated_at: '2026-11-26T15:33:00.000000Z'
      };
      server.on('POST', `jobs/${JOB_QUEUED.id}/cancel`, json(cancelling));
      await expect(model.cancelJob(JOB_QUEUED.id)).resolves.toEqual(cancelling);
      expect(server.log()).toEqual([`POST jobs/${JOB_QUEUED.id}/cancel`]);
      expect(ids(model)).toEqual(JOBS.map(j => j.id));
      expect(model.jobs.data[1]).toEqual(cancelling);
      expect(jobChanges).toEqual([cancelling]);
      expect(model.runningCount).toBe(2);

      server.on(
        'POST',
        `jobs/${JOB_RUNNING.id}/cancel`,
        json({ ...JOB_RUNNING, state: 'CANCELLED' })
      );
      await model.cancelJob(JOB_RUNNING.id);
      expect(listed(model, JOB_RUNNING.id).state).toBe('CANCELLED');
      expect(model.runningCount).toBe(1);
    });

    it('a refused cancel rejects and changes nothing', async () => {
      await loaded();
      server.on(
        'POST',
        `jobs/${JOB_DONE.id}/cancel`,
        apiError(409, 'illegal_transition', 'job is COMPLETED: it cannot be cancelled')
      );
      await expect(model.cancelJob(JOB_DONE.id)).rejects.toMatchObject({
        status: 409,
        code: 'illegal_transition'
      });
      expect(model.jobs.data).toEqual(JOBS);
      expect(jobChanges).toEqual([]);
    });

    it('saveCredential stores it, then reads backends and credentials again', async () => {
      await loaded();
      const info = credential({ alias: 'ibm-open', provider: 'ibm', hint: '…7c1d' });
      server.on('PUT', 'credentials/ibm-open', json(info, 201, 'Created'));
      server.on('GET', 'credentials', json([credential(), info]));
      server.on(
        'GET',
        'backends',
        json([AER, { ...IONQ, credentials: 'configured', available: true, status: 'available' }])
      );
      const request = {
        provider: 'ibm' as const,
        secret: { token: 'ibm-token-0000007c1d', channel: 'ibm_quantum_platform' }
      };
      await expect(model.saveCredential('ibm-open', request)).resolves.toEqual(info);
      expect(server.log()[0]).toBe('PUT credentials/ibm-open');
      expect(server.log().slice(1).sort()).toEqual(['GET backends', 'GET credentials']);
      expect(JSON.parse(server.requests[0].body!)).toEqual(request);
      expect(model.credentials.data.map(c => c.alias)).toEqual(['ionq-main', 'ibm-open']);
      expect(model.backends.data[1].credentials).toBe('configured');
    });

    it('a refused credential rejects and reads nothing', async () => {
      await loaded();
      server.on(
        'PUT',
        'credentials/ionq-main',
        apiError(400, 'invalid_request', 'secret.api_key: required')
      );
      await expect(
        model.saveCredential('ionq-main', { provider: 'ionq', secret: {} })
      ).rejects.toMatchObject({
        status: 400,
        message: 'secret.api_key: required'
      });
      expect(server.log()).toEqual(['PUT credentials/ionq-main']);
    });

    it('deleteCredential deletes it, then reads the credential list again', async () => {
      await loaded();
      server.on('DELETE', 'credentials/ionq-main', new Response(null, { status: 204 }));
      server.on('GET', 'credentials', json([]));
      await expect(model.deleteCredential('ionq-main')).resolves.toBeUndefined();
      expect(server.log()[0]).toBe('DELETE credentials/ionq-main');
      expect(server.log().slice(1).sort()).toEqual(['GET backends', 'GET credentials']);
      expect(model.credentials).toEqual({ status: 'ready', data: [], error: null });
    });

    it('testCredential answers what the provider said', async () => {
      await loaded();
      server.on(
        'POST',
        'credentials/ionq-main/test',
        json({ alias: 'ionq-main', ok: true, message: 'IonQ accepted the key' })
      );
      await expect(model.testCredential('ionq-main')).resolves.toEqual({
        alias: 'ionq-main',
        ok: true,
        message: 'IonQ accepted the key'
      });
      expect(server.log()).toEqual(['POST credentials/ionq-main/test']);
    });

    it('submitTestJob posts the Bell circuit to the backend and lists the job first', async () => {
      await loaded();
      const created = job({
        id: '5f2c9a1e0b7d2a01',
        backend: 'ionq',
        name: 'bell-test',
        state: 'CREATED',
        created_at: '2026-11-26T16:00:00.000000Z'
      });
      server.on('POST', 'jobs', json(created, 201, 'Created'));
      await expect(model.submitTestJob('ionq')).resolves.toEqual(created);
      expect(server.log()).toEqual(['POST jobs']);
      expect(JSON.parse(server.requests[0].body!)).toEqual({
        backend: 'ionq',
        circuits: [BELL_QASM3],
        shots: 1024,
        name: 'bell-test'
      });
      expect(server.requests[0].headers.get('Content-Type')).toBe('application/json');
      expect(ids(model)[0]).toBe(created.id);
      expect(model.runningCount).toBe(3);
    });
  });

  describe('dashboards', () => {
    it('refreshDashboards keeps the links and the hint the server answers', async () => {
      await loaded();
      server.on('GET', 'dashboards', json(DASHBOARDS_WITHOUT_VOILA));
      await model.refreshDashboards();
      expect(server.log()).toEqual(['GET dashboards']);
      expect(model.dashboards).toEqual({
        status: 'ready',
        data: DASHBOARDS_WITHOUT_VOILA.dashboards,
        error: null
      });
      expect(model.dashboardsHint).toBe(DASHBOARDS_WITHOUT_VOILA.hint);
      expect(changes).toBeGreaterThanOrEqual(2);

      // The server's set-up changed (Voila enabled): the next refresh links them, no hint.
      server.on('GET', 'dashboards', json(DASHBOARDS));
      await model.refresh();
      expect(model.dashboards.data.map(board => board.url)).toEqual([
        '/user/ada/voila/render/notebooks/dashboards/jobs.ipynb',
        '/user/ada/voila/render/notebooks/dashboards/experiments.ipynb',
        '/user/ada/voila/render/notebooks/dashboards/cost.ipynb'
      ]);
      expect(model.dashboardsHint).toBeNull();
    });

    it('is loading until the answer arrives', async () => {
      const held = new Deferred<Response>();
      server.on('GET', 'dashboards', () => held.promise);
      create();
      const refreshing = model.refreshDashboards();
      await settle();
      expect(model.dashboards).toEqual({ status: 'loading', data: [], error: null });
      held.resolve(json(DASHBOARDS));
      await refreshing;
      expect(model.dashboards.status).toBe('ready');
    });

    it('a failure says why, keeps what it had and never rejects', async () => {
      await loaded();
      server.on('GET', 'dashboards', apiError(404, 'not_found', 'no such route'));
      await expect(model.refreshDashboards()).resolves.toBeUndefined();
      expect(model.dashboards).toEqual({
        status: 'error',
        data: DASHBOARDS.dashboards,
        error: 'no such route'
      });
    });
  });

  describe('poll', () => {
    /** What a refresh of everything reads, sorted. */
    const EVERYTHING = [
      'GET backends',
      'GET budget',
      'GET credentials',
      'GET jobs?limit=50',
      'GET pipeline-runs?limit=20',
      'GET pipelines',
      'GET runs?limit=20'
    ];
    /** What the first tick reads: everything, and the dashboards (read only then). */
    const FIRST_TICK = ['GET dashboards', ...EVERYTHING].sort();

    /** Let due timers fire, then the answers they asked for arrive. */
    async function advance(ms: number): Promise<void> {
      jest.advanceTimersByTime(ms);
      await settle(10);
    }

    beforeEach(() => {
      jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
      // Lumino draws the backoff at random between the interval and 3× the last one.
      jest.spyOn(Math, 'random').mockReturnValue(0.75);
    });

    it('polls at the refresh interval, backing off up to 5 minutes', () => {
      create({ refreshInterval: 2 });
      expect(model.poll.frequency).toEqual({ interval: 2000, backoff: true, max: 300000 });
      expect(model.poll.state.phase).toBe('constructed');
      create();
      expect(model.poll.frequency.interval).toBe(10000);
    });

    it('a failing jobs read backs off; a good one resolves at the interval again', async () => {
      answerEverything(server);
      create({ refreshInterval: 2 });
      await model.poll.start();
      await advance(0); // tick 1
      expect(model.poll.state.phase).toBe('resolved');
      expect(model.poll.state.interval).toBe(2000);
      expect(server.log().sort()).toEqual(FIRST_TICK);

      server.clear();
      server.on('GET', 'jobs', apiError(503, 'not_ready', 'the ledger is locked'));
      await advance(2000);
      expect(server.log()).toEqual(['GET jobs?limit=50']);
      expect(model.poll.state.phase).toBe('rejected');
      expect(model.jobs.status).toBe('error');
      const first = model.poll.state.interval;
      expect(first).toBeGreaterThan(2000);
      expect(first).toBeLessThanOrEqual(6000);

      // Nothing at the usual interval: the poll waits longer.
      server.clear();
      await advance(first - 1);
      expect(server.requests).toHaveLength(0);
      await advance(1);
      expect(server.sent('GET', 'jobs')).toHaveLength(1);
      expect(model.poll.state.phase).toBe('rejected');
      const second = model.poll.state.interval;
      expect(second).toBeGreaterThan(first);

      server.on('GET', 'jobs', json({ jobs: JOBS, next: null }));
      await advance(second);
      expect(model.poll.state.phase).toBe('reconnected');
      expect(model.poll.state.interval).toBe(2000);
      expect(model.jobs).toEqual({ status: 'ready', data: JOBS, error: null });
      await advance(2000);
      expect(model.poll.state.phase).toBe('resolved');
    });

    it('a failing part other than the jobs does not back the poll off', async () => {
      answerEverything(server);
      server.on('GET', 'runs', apiError(503, 'tracking_unavailable', 'MLflow is not reachable'));
      server.on('GET', 'budget', apiError(503, 'not_ready', 'the ledger is locked'));
      create({ refreshInterval: 2 });
      await model.poll.start();
      await advance(0); // tick 1
      expect(model.poll.state.phase).toBe('resolved');
      expect(model.poll.state.interval).toBe(2000);
      expect(model.runs.status).toBe('error');
    });

    it('reads the jobs every tick; backends, runs and budget every third; the budget after a job finishes', async () => {
      answerEverything(server);
      create({ refreshInterval: 1 });
      await model.poll.start();
      await advance(0); // tick 1: everything, and the dashboards (only then)
      expect(server.log().sort()).toEqual(FIRST_TICK);

      // A job finishes: its cost counts against the budget, read at the next tick.
      server.on('GET', `jobs/${JOB_RUNNING.id}`, json(completed(JOB_RUNNING)));
      events.stream.emit(emission(status(JOB_RUNNING, 'COMPLETED', 150)));
      await settle();
      server.clear();
      await advance(1000); // tick 2
      expect(server.log().sort()).toEqual(['GET budget', 'GET jobs?limit=50']);

      server.clear();
      await advance(1000); // tick 3
      expect(server.log().sort()).toEqual(EVERYTHING);

      server.clear();
      await advance(1000); // tick 4
      await advance(1000); // tick 5
      expect(server.log()).toEqual(['GET jobs?limit=50', 'GET jobs?limit=50']);

      server.clear();
      await advance(1000); // tick 6
      expect(server.log().sort()).toEqual(EVERYTHING);
    });

    it('refreshInterval changes the interval of the poll (at least a second)', () => {
      create({ refreshInterval: 2 });
      model.refreshInterval = 30;
      expect(model.poll.frequency.interval).toBe(30000);
      model.refreshInterval = 0;
      expect(model.poll.frequency.interval).toBe(1000);
    });

    it('refreshInterval accepts an interval longer than the backoff ceiling', () => {
      create({ refreshInterval: 2 });
      expect(() => {
        model.refreshInterval = 600;
      }).not.toThrow();
      expect(model.poll.frequency.interval).toBe(600000);
    });
  });

  describe('pipelines', () => {
    const RUN_DONE = pipelineRun();
    const RUN_NOW = pipelineRun({
      id: '7c1e5a9b3d2f4e02',
      state: 'RUNNING',
      created_at: '2026-11-26T15:30:00.000000Z',
      started_at: '2026-11-26T15:30:01.000000Z',
      finished_at: null,
      duration_s: null,
      mlflow_run_id: null
    });
    const NIGHTLY = pipeline({ last_run: RUN_NOW });
    const PAUSED = pipeline({
      last_run: RUN_NOW,
      schedule: { ...pipeline().schedule!, paused: true, next_due_at: null }
    });

    function answerPipelines(runs = [RUN_NOW, RUN_DONE], saved = [NIGHTLY]): void {
      server
        .on('GET', 'pipelines', json({ pipelines: saved }))
        .on('GET', 'pipeline-runs', json({ pipeline_runs: runs, next: null }));
    }

    function runState(id: string): string | undefined {
      return model.pipelineRuns.data.find(r => r.id === id)?.state;
    }

    it('asPipelineStatus takes pipeline_status events only', () => {
      const event = pipelineStatus(RUN_NOW, 'COMPLETED');
      expect(asPipelineStatus(pipelineEmission(event))).toEqual({
        schema_id: expect.any(String),
        ...event
      });
      expect(asPipelineStatus({ schema_id: JOB_STATUS_SCHEMA, ...event })).toBeNull();
      expect(asJobStatus(pipelineEmission(event))).toBeNull();
      expect(
        asPipelineStatus({ ...pipelineEmission(event), run_id: 3 } as unknown as Event.Emission)
      ).toBeNull();
    });

    it('refreshPipelines fills the saved pipelines and the recent runs', async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      expect(model.pipelines).toEqual({ status: 'ready', data: [NIGHTLY], error: null });
      expect(model.pipelineRuns).toEqual({
        status: 'ready',
        data: [RUN_NOW, RUN_DONE],
        error: null
      });
      expect(server.log().sort()).toEqual(['GET pipeline-runs?limit=20', 'GET pipelines']);
    });

    it('a failing read says why and never rejects; the other part is ready', async () => {
      create();
      answerPipelines();
      server.on('GET', 'pipelines', apiError(503, 'not_ready', 'the ledger is locked'));
      await expect(model.refreshPipelines()).resolves.toBeUndefined();
      expect(model.pipelines.status).toBe('error');
      expect(model.pipelines.error).toBe('the ledger is locked');
      expect(model.pipelineRuns.status).toBe('ready');
    });

    it('reads asked for while one is on its way make one more read, not one each', async () => {
      create();
      const held = new Deferred<Response>();
      let reads = 0;
      server.on('GET', 'pipelines', async () => {
        reads += 1;
        return reads === 1 ? held.promise : json({ pipelines: [PAUSED] });
      });
      server.on('GET', 'pipeline-runs', json({ pipeline_runs: [], next: null }));
      const first = model.refreshPipelines();
      void model.refreshPipelines();
      void model.refreshPipelines();
      held.resolve(json({ pipelines: [NIGHTLY] }));
      await first;
      await settle();
      expect(reads).toBe(2);
      expect(model.pipelines.data).toEqual([PAUSED]);
    });

    it("an event changes a listed run's state and its pipeline's last run at once, then reads again", async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      server.clear();
      const finished = { ...RUN_NOW, state: 'FAILED' as const, error: 'ZeroDivisionError' };
      answerPipelines([finished, RUN_DONE], [pipeline({ last_run: finished })]);
      let seen: string | undefined;
      model.changed.connect(() => {
        seen = seen ?? runState(RUN_NOW.id);
      });
      events.stream.emit(
        pipelineEmission(
          pipelineStatus(RUN_NOW, 'FAILED', undefined, {
            error: 'ZeroDivisionError: division by zero',
            error_cell: 3
          })
        )
      );
      expect(seen).toBe('FAILED'); // before any answer arrived
      expect(model.pipelines.data[0].last_run?.state).toBe('FAILED');
      expect(model.pipelineRuns.data[0].error_cell).toBe(3);
      await settle();
      expect(server.log().sort()).toEqual(['GET pipeline-runs?limit=20', 'GET pipelines']);
      expect(model.pipelineRuns.data[0].error).toBe('ZeroDivisionError');
    });

    it("a finished run's MLflow run, announced after its end, shows at once", async () => {
      const ended = { ...RUN_NOW, state: 'COMPLETED' as const, mlflow_run_id: null };
      create();
      answerPipelines([ended]);
      await model.refreshPipelines();
      server.on('GET', 'pipelines', () => new Deferred<Response>().promise);
      model.handlePipelineEvent({
        ...pipelineStatus(ended, 'COMPLETED'),
        mlflow_run_id: 'b4e1d2c3a5f6478899aabbccddeeff09'
      });
      expect(model.pipelineRuns.data[0].mlflow_run_id).toBe('b4e1d2c3a5f6478899aabbccddeeff09');
      expect(model.pipelineRuns.data[0].state).toBe('COMPLETED');
    });

    it('a new run, unknown to the list, is read in by the event', async () => {
      create();
      answerPipelines([RUN_DONE]);
      await model.refreshPipelines();
      answerPipelines([RUN_NOW, RUN_DONE]);
      model.handlePipelineEvent({ ...pipelineStatus(RUN_NOW, 'RUNNING'), old_state: null });
      await settle();
      expect(model.pipelineRuns.data.map(r => r.id)).toEqual([RUN_NOW.id, RUN_DONE.id]);
    });

    it('a finished run does not go back on a late event; an older event never wins', async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      server.on('GET', 'pipelines', () => new Deferred<Response>().promise);
      model.handlePipelineEvent(pipelineStatus(RUN_DONE, 'RUNNING'));
      expect(runState(RUN_DONE.id)).toBe('COMPLETED');
      model.handlePipelineEvent(
        pipelineStatus(RUN_NOW, 'PARKED', '2026-11-26T15:32:00.000000+00:00')
      );
      model.handlePipelineEvent(
        pipelineStatus(RUN_NOW, 'QUEUED', '2026-11-26T15:31:59.000000+00:00')
      );
      expect(runState(RUN_NOW.id)).toBe('PARKED');
    });

    it('without an event bus the runs are read every tick; with it, while a run is unfinished', async () => {
      jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
      answerEverything(server);
      answerPipelines([RUN_DONE]);
      create({ refreshInterval: 1 });
      await model.poll.start();
      jest.advanceTimersByTime(0);
      await settle(10);
      server.clear();
      jest.advanceTimersByTime(1000); // tick 2: live and nothing unfinished
      await settle(10);
      expect(server.sent('GET', 'pipelines')).toHaveLength(0);

      answerPipelines([RUN_NOW, RUN_DONE]);
      await model.refreshPipelines();
      server.clear();
      jest.advanceTimersByTime(1000); // tick 3: a slow tick anyway
      await settle(10);
      jest.advanceTimersByTime(1000); // tick 4: a run is unfinished
      await settle(10);
      expect(server.sent('GET', 'pipelines')).toHaveLength(2);

      create({ events: false, refreshInterval: 1 });
      answerPipelines([RUN_DONE]);
      await model.poll.start();
      jest.advanceTimersByTime(0);
      await settle(10);
      server.clear();
      jest.advanceTimersByTime(1000); // tick 2, polling only
      await settle(10);
      expect(server.sent('GET', 'pipelines')).toHaveLength(1);
    });

    it('pausePipeline and resumePipeline post and show the answer in place', async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      server.on('POST', 'pipelines/nightly/pause', json(PAUSED));
      server.on('POST', 'pipelines/nightly/resume', json(NIGHTLY));
      await expect(model.pausePipeline('nightly')).resolves.toEqual(PAUSED);
      expect(model.pipelines.data).toEqual([PAUSED]);
      await model.resumePipeline('nightly');
      expect(model.pipelines.data).toEqual([NIGHTLY]);
    });

    it('a refused pause rejects and changes nothing', async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      server.on(
        'POST',
        'pipelines/nightly/pause',
        apiError(404, 'pipeline_not_found', "no saved pipeline 'nightly'")
      );
      await expect(model.pausePipeline('nightly')).rejects.toBeInstanceOf(QmlopsApiError);
      expect(model.pipelines.data).toEqual([NIGHTLY]);
    });

    it('runPipelineNow lists the QUEUED run first, then reads the lists again', async () => {
      create();
      answerPipelines([RUN_DONE]);
      await model.refreshPipelines();
      server.clear();
      const queued = pipelineRun({
        id: '7c1e5a9b3d2f4e09',
        state: 'QUEUED',
        created_at: '2026-11-26T15:40:00.000000Z',
        started_at: null,
        finished_at: null,
        duration_s: null
      });
      server.on('POST', 'pipelines/nightly/runs', json(queued, 202));
      const held = new Deferred<Response>();
      server.on('GET', 'pipeline-runs', () => held.promise);
      await expect(model.runPipelineNow('nightly')).resolves.toEqual(queued);
      expect(model.pipelineRuns.data.map(r => r.id)).toEqual([queued.id, RUN_DONE.id]);
      held.resolve(json({ pipeline_runs: [queued, RUN_DONE], next: null }));
      await settle();
      expect(server.log()).toContain('GET pipeline-runs?limit=20');
    });

    it('deletePipeline deletes it and takes it off the list', async () => {
      create();
      answerPipelines();
      await model.refreshPipelines();
      server.on('DELETE', 'pipelines/nightly', new Response(null, { status: 204 }));
      await model.deletePipeline('nightly');
      expect(model.pipelines.data).toEqual([]);
      expect(server.sent('DELETE', 'pipelines/nightly')).toHaveLength(1);
    });
  });

  describe('dispose', () => {
    it('disconnects from the stream, stops the poll, and is idempotent', async () => {
      await loaded();
      let notified = 0;
      model.changed.connect(() => (notified += 1));
      model.dispose();
      expect(model.isDisposed).toBe(true);
      expect(model.poll.isDisposed).toBe(true);
      events.stream.emit(emission(status(JOB_RUNNING, 'CANCELLING', 160)));
      events.stream.emit(
        emission({ ...status(JOB_RUNNING, 'RUNNING', 161), job_id: '5f2c9a1e0b7d3a01' })
      );
      await settle();
      expect(listed(model, JOB_RUNNING.id).state).toBe('RUNNING');
      expect(server.requests).toHaveLength(0);
      expect(notified).toBe(0);
      expect(() => model.dispose()).not.toThrow();
    });

    it('a model still connected keeps listening (the stream is shared)', async () => {
      await loaded();
      const other = new QmlopsModel({
        client: new QmlopsClient(settings()),
        events: events.asManager(),
        autoStart: false
      });
      other.dispose();
      events.stream.emit(emission(status(JOB_RUNNING, 'CANCELLING', 170)));
      expect(listed(model, JOB_RUNNING.id).state).toBe('CANCELLING');
    });
  });
});
