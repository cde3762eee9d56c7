/**
 * The six sections of the sidebar: Backends (with credentials), Jobs, Pipelines, Runs, Budget
 * and Dashboards.
 * Each renders the model's state, its loading, empty and error states, and calls commands for
 * what opens elsewhere (a job's detail, the MLflow UI).
 */
import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { Signal } from '@lumino/signaling';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { describeError } from './model';
import {
  CANCELLABLE_STATES,
  CommandIDs,
  credentialFields,
  CredentialProvider,
  IBudgetLimit,
  ICredentialTest,
  IJobRecord,
  IPipeline,
  IPipelineRun,
  IQmlopsModel,
  IResource,
  JOB_STATES,
  JobState,
  PIPELINE_TERMINAL_STATES
} from './tokens';
import {
  baseName,
  elapsedSeconds,
  formatAgo,
  formatDuration,
  formatNumber,
  formatUsd,
  jobCost,
  pipelineRunSeconds,
  queuedSeconds,
  queueEta,
  secondsUntil,
  shortId
} from './format';

/** What the sections need besides the model. */
export interface ISectionContext {
  model: IQmlopsModel;
  commands: CommandRegistry;
  trans: TranslationBundle;
  /** Asks the Backends section to open its credential form. */
  credentialFormRequested: Signal<object, void>;
  /** The backend a test job goes to (the settings' defaultBackend). */
  defaultBackend: () => string;
}

type SectionName = 'backends' | 'jobs' | 'pipelines' | 'runs' | 'budget' | 'dashboards';

/** A section widget: a React body re-rendered whenever the model changes. */
export class SectionWidget extends ReactWidget {
  constructor(
    private readonly _section: SectionName,
    private readonly _context: ISectionContext,
    private readonly _render: (context: ISectionContext) => JSX.Element
  ) {
    super();
    this.addClass('jp-qmlops-SectionWidget');
    this.id = `qmlops-section-${_section}`;
  }

  render(): JSX.Element {
    return (
      <div className="jp-qmlops-Section" data-section={this._section}>
        <UseSignal signal={this._context.model.changed}>
          {() => this._render(this._context)}
        </UseSignal>
      </div>
    );
  }
}

// -- shared pieces ---------------------------------------------------------------------------

function Loading(props: { trans: TranslationBundle; what: string }): JSX.Element {
  return (
    <div className="jp-qmlops-Loading" role="status" aria-live="polite">
      {props.trans.__('Loading %1…', props.what)}
    </div>
  );
}

function ErrorState(props: {
  trans: TranslationBundle;
  message: string;
  onRetry: () => void;
}): JSX.Element {
  return (
    <div className="jp-qmlops-Error" role="alert">
      <span className="jp-qmlops-Error-message">{props.message}</span>
      <button
        className="jp-Button jp-mod-styled jp-mod-reject"
        data-action="retry"
        onClick={props.onRetry}
      >
        {props.trans.__('Retry')}
      </button>
    </div>
  );
}

function Empty(props: { children: React.ReactNode }): JSX.Element {
  return <div className="jp-qmlops-Empty">{props.children}</div>;
}

/** Text whose `backticked` parts are code (commands and calls to type). */
export function Prose(props: { text: string }): JSX.Element {
  const parts = props.text.split('`');
  return (
    <>
      {parts.map((part, i) =>
        i % 2 === 1 ? (
          <code key={i} className="jp-qmlops-Code">
            {part}
          </code>
        ) : (
          <React.Fragment key={i}>{part}</React.Fragment>
        )
      )}
    </>
  );
}

/** Loading, error or nothing: what shows before (or instead of) a resource's data. */
function stateOf<T>(
  resource: IResource<T[]>,
  trans: TranslationBundle,
  what: string,
  retry: () => void
): JSX.Element | null {
  if ((resource.status === 'idle' || resource.status === 'loading') && resource.data.length === 0) {
    return <Loading trans={trans} what={what} />;
  }
  if (resource.status === 'error') {
    return (
      <ErrorState
        trans={trans}
        message={resource.error ?? trans.__('Something went wrong.')}
        onRetry={retry}
      />
    );
  }
  return null;
}

export function StateChip(props: {
  state: string;
  trans: TranslationBundle;
  label?: string;
}): JSX.Element {
  return (
    <span className="jp-qmlops-chip" data-state={props.state} title={props.label ?? props.state}>
      {props.state}
    </span>
  );
}

/** Re-render every second while `active` (elapsed times tick). */
function useTicker(active: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!active) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

// -- Backends --------------------------------------------------------------------------------

export function BackendsBody(context: ISectionContext): JSX.Element {
  return <Backends context={context} />;
}

function Backends(props: { context: ISectionContext }): JSX.Element {
  const { model, trans, credentialFormRequested, commands } = props.context;
  const [formOpen, setFormOpen] = React.useState(false);
  React.useEffect(() => {
    const open = () => setFormOpen(true);
    credentialFormRequested.connect(open);
    return () => {
      credentialFormRequested.disconnect(open);
    };
  }, [credentialFormRequested]);
  const backends = model.backends;
  const state = stateOf(backends, trans, trans.__('backends'), () => void model.refreshBackends());
  return (
    <>
      {formOpen ? (
        <CredentialForm context={props.context} onClose={() => setFormOpen(false)} />
      ) : (
        <div className="jp-qmlops-Actions">
          <button
            className="jp-Button jp-mod-styled jp-mod-accept"
            data-action="add-credential"
            onClick={() => setFormOpen(true)}
          >
            {trans.__('Add credential')}
          </button>
          <button
            className="jp-Button jp-mod-styled"
            data-action="submit-test-job"
            onClick={() => void commands.execute(CommandIDs.submitTestJob, {})}
            title={trans.__('Submit a Bell pair to %1', props.context.defaultBackend())}
          >
            {trans.__('Run a test job')}
          </button>
        </div>
      )}
      <Credentials context={props.context} />
      <h3 className="jp-qmlops-Subheading">{trans.__('Devices and simulators')}</h3>
      {state ??
        (backends.data.length === 0 ? (
          <Empty>
            <Prose
              text={trans.__(
                'No backends are enabled. Enable one in backends.yaml under QMLOPS_HOME (run `qmlops backends` in a terminal to see where it is).'
              )}
            />
          </Empty>
        ) : (
          <ul className="jp-qmlops-List" aria-label={trans.__('Backends')}>
            {backends.data.map(backend => (
              <li
                key={backend.name}
                className="jp-qmlops-Backend"
                data-backend={backend.name}
                title={backend.description}
              >
                <div className="jp-qmlops-Row">
                  <span className="jp-qmlops-Backend-name">{backend.name}</span>
                  <span
                    className="jp-qmlops-chip"
                    data-available={backend.available ? 'true' : 'false'}
                    title={backend.status}
                  >
                    {backend.available ? trans.__('available') : trans.__('unavailable')}
                  </span>
                </div>
                <div className="jp-qmlops-Meta">
                  <span>{backend.kind === 'qpu' ? trans.__('QPU') : trans.__('simulator')}</span>
                  <span>{backend.local ? trans.__('local') : backend.provider}</span>
                  <span>
                    {backend.max_qubits === null
                      ? trans.__('qubits: any')
                      : trans.__('%1 qubits', backend.max_qubits)}
                  </span>
                  <span>{trans.__('≤ %1 shots', formatNumber(backend.max_shots))}</span>
                  <span>{trans.__('%1 at a time', backend.max_concurrent_jobs)}</span>
                  <span data-credentials={backend.credentials}>
                    {backend.credentials === 'missing'
                      ? trans.__('credential missing')
                      : backend.credentials === 'configured'
                        ? trans.__('credential configured')
                        : trans.__('no credential needed')}
                  </span>
                </div>
                {!backend.available && backend.status ? (
                  <div className="jp-qmlops-Muted">{backend.status}</div>
                ) : null}
              </li>
            ))}
          </ul>
        ))}
    </>
  );
}

function Credentials(props: { context: ISectionContext }): JSX.Element {
  const { model, trans } = props.context;
  const [tests, setTests] = React.useState<Record<string, ICredentialTest | 'testing'>>({});
  const credentials = model.credentials;
  if (credentials.status === 'error') {
    return (
      <ErrorState
        trans={trans}
        message={credentials.error ?? ''}
        onRetry={() => void model.refreshBackends()}
      />
    );
  }
  if (credentials.data.length === 0) {
    return credentials.status === 'ready' ? (
      <Empty>
        {trans.__(
          'No credentials stored. Add one to use IBM Quantum, Amazon Braket or IonQ; the secret is encrypted on the server and never shown again.'
        )}
      </Empty>
    ) : (
      <></>
    );
  }
  const test = async (alias: string) => {
    setTests(current => ({ ...current, [alias]: 'testing' }));
    try {
      const answer = await model.testCredential(alias);
      setTests(current => ({ ...current, [alias]: answer }));
    } catch (error) {
      setTests(current => ({
        ...current,
        [alias]: { alias, ok: false, message: describeError(error) }
      }));
    }
  };
  const remove = async (alias: string) => {
    const answer = await showDialog({
      title: trans.__('Delete credential'),
      body: trans.__(
        'Delete the credential "%1"? Jobs that name it can no longer be submitted.',
        alias
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (answer.button.accept) {
      try {
        await model.deleteCredential(alias);
      } catch (error) {
        setTests(current => ({
          ...current,
          [alias]: { alias, ok: false, message: describeError(error) }
        }));
      }
    }
  };
  return (
    <>
      <h3 className="jp-qmlops-Subheading">{trans.__('Credentials')}</h3>
      <ul className="jp-qmlops-List" aria-label={trans.__('Credentials')}>
        {credentials.data.map(credential => {
          const result = tests[credential.alias];
          return (
            <li
              key={credential.alias}
              className="jp-qmlops-Credential"
              data-alias={credential.alias}
            >
              <div className="jp-qmlops-Row">
                <span className="jp-qmlops-Credential-alias">{credential.alias}</span>
                <span className="jp-qmlops-Muted">{credential.provider}</span>
                <code
                  className="jp-qmlops-Credential-hint"
                  title={trans.__('The last characters of the secret')}
                >
                  {credential.hint}
                </code>
              </div>
              <div className="jp-qmlops-Row">
                <span className="jp-qmlops-Muted">
                  {credential.last_used_at
                    ? trans.__('used %1', formatAgo(credential.last_used_at))
                    : trans.__('never used')}
                </span>
                <span className="jp-qmlops-Spacer" />
                <button
                  className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
                  data-action="test-credential"
                  disabled={result === 'testing'}
                  onClick={() => void test(credential.alias)}
                  aria-label={trans.__('Test credential %1', credential.alias)}
                >
                  {result === 'testing' ? trans.__('Testing…') : trans.__('Test')}
                </button>
                <button
                  className="jp-Button jp-mod-styled jp-mod-warn jp-qmlops-SmallButton"
                  data-action="delete-credential"
                  onClick={() => void remove(credential.alias)}
                  aria-label={trans.__('Delete credential %1', credential.alias)}
                >
                  {trans.__('Delete')}
                </button>
              </div>
              {result && result !== 'testing' ? (
                <div
                  className="jp-qmlops-Credential-test"
                  data-ok={result.ok ? 'true' : 'false'}
                  role="status"
                >
                  {result.ok ? '✓ ' : '✗ '}
                  {result.message}
                </div>
              ) : null}
            </li>
          );
        })}
      </ul>
    </>
  );
}

const ALIAS_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A write-only form: the secret goes to the server and is never read back. */
function CredentialForm(props: { context: ISectionContext; onClose: () => void }): JSX.Element {
  const { model, trans } = props.context;
  const [provider, setProvider] = React.useState<CredentialProvider>('ionq');
  const [alias, setAlias] = React.useState('');
  const [values, setValues] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const [saving, setSaving] = React.useState(false);
  const fields = credentialFields(trans)[provider];
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const name = alias.trim();
    if (!ALIAS_PATTERN.test(name)) {
      setError(
        trans.__(
          'An alias is 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit.'
        )
      );
      return;
    }
    const secret: Record<string, string> = {};
    for (const field of fields) {
      const value = (values[field.name] ?? '').trim();
      if (field.required && !value) {
        setError(trans.__('%1 is required.', field.label));
        return;
      }
      if (value) {
        secret[field.name] = value;
      }
    }
    setSaving(true);
    setError(null);
    try {
      await model.saveCredential(name, { provider, secret });
      setValues({});
      setAlias('');
      props.onClose();
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setSaving(false);
    }
  };
  return (
    <form
      className="jp-qmlops-CredentialForm"
      onSubmit={event => void submit(event)}
      autoComplete="off"
    >
      <h3 className="jp-qmlops-Subheading">{trans.__('Add a credential')}</h3>
      <label>
        {trans.__('Provider')}
        <select
          name="provider"
          value={provider}
          onChange={event => {
            setProvider(event.target.value as CredentialProvider);
            setValues({});
          }}
        >
          <option value="ionq">{trans.__('IonQ')}</option>
          <option value="ibm">{trans.__('IBM Quantum')}</option>
          <option value="aws">{trans.__('Amazon Braket (AWS)')}</option>
        </select>
      </label>
      <label>
        {trans.__('Alias')}
        <input
          name="alias"
          value={alias}
          placeholder={`${provider}-main`}
          onChange={event => setAlias(event.target.value)}
          autoFocus
          required
        />
      </label>
      {fields.map(field => (
        <label key={`${provider}-${field.name}`}>
          {field.required ? field.label : trans.__('%1 (optional)', field.label)}
          <input
            name={field.name}
            type={field.secret ? 'password' : 'text'}
            autoComplete={field.secret ? 'new-password' : 'off'}
            spellCheck={false}
            placeholder={field.placeholder}
            value={values[field.name] ?? ''}
            onChange={event => setValues({ ...values, [field.name]: event.target.value })}
          />
        </label>
      ))}
      {error ? (
        <div className="jp-qmlops-CredentialForm-error" role="alert">
          {error}
        </div>
      ) : null}
      <div className="jp-qmlops-Actions">
        <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept" disabled={saving}>
          {saving ? trans.__('Saving…') : trans.__('Save')}
        </button>
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject"
          data-action="cancel-credential"
          onClick={() => {
            setValues({});
            props.onClose();
          }}
        >
          {trans.__('Cancel')}
        </button>
      </div>
      <p className="jp-qmlops-Muted">
        {trans.__(
          'The secret is sent to this Jupyter server, stored encrypted, and never shown again: notebooks name it by its alias.'
        )}
      </p>
    </form>
  );
}

// -- Jobs ------------------------------------------------------------------------------------

export function JobsBody(context: ISectionContext): JSX.Element {
  return <Jobs context={context} />;
}

function Jobs(props: { context: ISectionContext }): JSX.Element {
  const { model, trans, commands } = props.context;
  const jobs = model.jobs;
  const filter = model.filter;
  const active = jobs.data.some(
    job => CANCELLABLE_STATES.has(job.state) || job.state === 'CANCELLING'
  );
  const now = useTicker(active);
  const [cancelling, setCancelling] = React.useState<Record<string, string>>({});
  const backendNames = Array.from(
    new Set([...model.backends.data.map(b => b.name), ...jobs.data.map(j => j.backend)])
  ).sort();
  const cancel = async (job: IJobRecord) => {
    setCancelling(current => ({ ...current, [job.id]: '' }));
    try {
      await model.cancelJob(job.id);
    } catch (error) {
      setCancelling(current => ({ ...current, [job.id]: describeError(error) }));
    }
  };
  const open = (job: IJobRecord) => void commands.execute(CommandIDs.openJob, { id: job.id });
  const state = stateOf(
    jobs,
    trans,
    trans.__('jobs'),
    () => void model.refreshJobs().catch(() => undefined)
  );
  return (
    <>
      <div className="jp-qmlops-Filters">
        <label>
          <span className="jp-qmlops-VisuallyHidden">{trans.__('State')}</span>
          <select
            name="state-filter"
            aria-label={trans.__('Filter jobs by state')}
            value={filter.state}
            onChange={event => model.setFilter({ state: event.target.value as JobState | '' })}
          >
            <option value="">{trans.__('All states')}</option>
            {JOB_STATES.map(s => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          <span className="jp-qmlops-VisuallyHidden">{trans.__('Backend')}</span>
          <select
            name="backend-filter"
            aria-label={trans.__('Filter jobs by backend')}
            value={filter.backend}
            onChange={event => model.setFilter({ backend: event.target.value })}
          >
            <option value="">{trans.__('All backends')}</option>
            {backendNames.map(name => (
              <option key={name} value={name}>
                {name}
              </option>
            ))}
          </select>
        </label>
        <span
          className="jp-qmlops-Muted"
          title={
            model.live ? trans.__('Updated live by server events') : trans.__('Updated by polling')
          }
        >
          {model.live ? trans.__('● live') : trans.__('○ polling')}
        </span>
      </div>
      {state ??
        (jobs.data.length === 0 ? (
          <Empty>
            {filter.state || filter.backend ? (
              trans.__(
                'No jobs match these filters. Choose "All states" and "All backends" to see every job.'
              )
            ) : (
              <Prose
                text={trans.__(
                  'No jobs yet. Submit one from a notebook (`%%qmlops run` or `qmlops_jupyter.submit(...)`), or run a test job.'
                )}
              />
            )}
            {!filter.state && !filter.backend ? (
              <div className="jp-qmlops-Actions">
                <button
                  className="jp-Button jp-mod-styled jp-mod-accept"
                  data-action="submit-test-job"
                  onClick={() => void commands.execute(CommandIDs.submitTestJob, {})}
                >
                  {trans.__('Run a Bell test on %1', props.context.defaultBackend())}
                </button>
              </div>
            ) : null}
          </Empty>
        ) : (
          <ul className="jp-qmlops-List" aria-label={trans.__('Jobs')}>
            {jobs.data.map(job => {
              const queued = queuedSeconds(job, now);
              const eta = queueEta(job, jobs.data, now);
              const cost = jobCost(job);
              const cancelError = cancelling[job.id];
              return (
                <li
                  key={job.id}
                  className="jp-qmlops-Job"
                  data-job-id={job.id}
                  data-state={job.state}
                  tabIndex={0}
                  aria-label={trans.__(
                    'Job %1, %2, on %3',
                    job.name ?? shortId(job.id),
                    job.state,
                    job.backend
                  )}
                  onClick={event => {
                    if (!(event.target as HTMLElement).closest('button')) {
                      open(job);
                    }
                  }}
                  onKeyDown={event => {
                    if (
                      (event.key === 'Enter' || event.key === ' ') &&
                      event.target === event.currentTarget
                    ) {
                      event.preventDefault();
                      open(job);
                    }
                  }}
                >
                  <div className="jp-qmlops-Row">
                    <span className="jp-qmlops-Job-name" title={job.id}>
                      {job.name ?? shortId(job.id)}
                    </span>
                    <span className="jp-qmlops-Spacer" />
                    <StateChip state={job.state} trans={trans} />
                  </div>
                  <div className="jp-qmlops-Meta">
                    <span className="jp-qmlops-Job-backend">{job.backend}</span>
                    <span>{trans.__('%1 shots', formatNumber(job.shots))}</span>
                    <span
                      className="jp-qmlops-Job-elapsed"
                      title={trans.__('Time since it was submitted')}
                    >
                      {formatDuration(elapsedSeconds(job, now))}
                    </span>
                    {cost !== null ? <span className="jp-qmlops-Job-cost">{cost}</span> : null}
                    {job.state === 'QUEUED' ? (
                      <span
                        className="jp-qmlops-Job-queue"
                        title={
                          eta
                            ? trans.__(
                                'ETA from the median queue time of %1 recent jobs on %2',
                                eta.samples,
                                job.backend
                              )
                            : trans.__('Time in the provider queue so far')
                        }
                      >
                        {job.queue_position !== null
                          ? trans.__('#%1 in queue', job.queue_position)
                          : trans.__('in queue')}
                        {queued !== null ? ` · ${formatDuration(queued)}` : ''}
                        {eta ? ` · ${trans.__('ETA ~%1', formatDuration(eta.seconds))}` : ''}
                      </span>
                    ) : null}
                    <span className="jp-qmlops-Spacer" />
                    {CANCELLABLE_STATES.has(job.state) ? (
                      <button
                        className="jp-Button jp-mod-styled jp-mod-warn jp-qmlops-SmallButton"
                        data-action="cancel-job"
                        disabled={cancelError === ''}
                        onClick={() => void cancel(job)}
                        aria-label={trans.__('Cancel job %1', job.name ?? shortId(job.id))}
                      >
                        {cancelError === '' ? trans.__('Cancelling…') : trans.__('Cancel')}
                      </button>
                    ) : null}
                  </div>
                  {job.error ? <div className="jp-qmlops-Job-error">{job.error}</div> : null}
                  {cancelError ? (
                    <div className="jp-qmlops-Job-error" role="alert">
                      {cancelError}
                    </div>
                  ) : null}
                </li>
              );
            })}
            {model.hasMoreJobs ? (
              <li className="jp-qmlops-More">
                <button
                  className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
                  data-action="more-jobs"
                  onClick={() => void model.loadMoreJobs().catch(() => undefined)}
                >
                  {trans.__('Show older jobs')}
                </button>
              </li>
            ) : null}
          </ul>
        ))}
    </>
  );
}

// -- Pipelines -------------------------------------------------------------------------------

export function PipelinesBody(context: ISectionContext): JSX.Element {
  return <Pipelines context={context} />;
}

function Pipelines(props: { context: ISectionContext }): JSX.Element {
  const { model, trans } = props.context;
  const pipelines = model.pipelines;
  const runs = model.pipelineRuns;
  const active = runs.data.some(run => !PIPELINE_TERMINAL_STATES.has(run.state));
  const now = useTicker(active || pipelines.data.some(p => p.schedule && !p.schedule.paused));
  const state = stateOf(
    pipelines,
    trans,
    trans.__('pipelines'),
    () => void model.refreshPipelines()
  );
  if (state) {
    return state;
  }
  const names = new Map(pipelines.data.map(p => [p.id, p.name]));
  return (
    <>
      {pipelines.data.length === 0 ? (
        <Empty>
          <Prose
            text={trans.__(
              'No saved pipelines. Save a notebook as one, run every night at 3:00, from a terminal: `qmlops pipeline schedule NOTEBOOK --cron "0 3 * * *"` (add `-p NAME VALUE` for its parameters).'
            )}
          />
        </Empty>
      ) : (
        <ul className="jp-qmlops-List" aria-label={trans.__('Saved pipelines')}>
          {pipelines.data.map(pipeline => (
            <PipelineRow key={pipeline.id} context={props.context} pipeline={pipeline} now={now} />
          ))}
        </ul>
      )}
      <h3 className="jp-qmlops-Subheading">{trans.__('Recent pipeline runs')}</h3>
      {runs.status === 'error' ? (
        <ErrorState
          trans={trans}
          message={runs.error ?? trans.__('Something went wrong.')}
          onRetry={() => void model.refreshPipelines()}
        />
      ) : runs.data.length === 0 ? (
        <Empty>
          <Prose
            text={trans.__(
              'No pipeline runs yet. Press Run now on a saved pipeline, or run a notebook once with `qmlops pipeline run NOTEBOOK`.'
            )}
          />
        </Empty>
      ) : (
        <ul className="jp-qmlops-List" aria-label={trans.__('Recent pipeline runs')}>
          {runs.data.map(run => (
            <PipelineRunRow
              key={run.id}
              context={props.context}
              run={run}
              pipelineName={run.pipeline_id ? (names.get(run.pipeline_id) ?? null) : null}
              now={now}
            />
          ))}
        </ul>
      )}
    </>
  );
}

function PipelineRow(props: {
  context: ISectionContext;
  pipeline: IPipeline;
  now: number;
}): JSX.Element {
  const { commands, trans } = props.context;
  const { pipeline, now } = props;
  const schedule = pipeline.schedule;
  const [busy, setBusy] = React.useState(false);
  const act = async (command: string) => {
    setBusy(true);
    try {
      await commands.execute(command, { name: pipeline.name });
    } finally {
      setBusy(false);
    }
  };
  const until = schedule && !schedule.paused ? secondsUntil(schedule.next_due_at, now) : null;
  const last = pipeline.last_run ?? null;
  return (
    <li
      className="jp-qmlops-Pipeline"
      data-pipeline={pipeline.name}
      data-paused={schedule ? String(schedule.paused) : 'none'}
      title={pipeline.notebook}
    >
      <div className="jp-qmlops-Row">
        <span className="jp-qmlops-Pipeline-name">{pipeline.name}</span>
        <span className="jp-qmlops-Spacer" />
        {schedule ? (
          <span
            className="jp-qmlops-chip"
            data-schedule={schedule.paused ? 'paused' : 'active'}
            title={
              schedule.paused
                ? trans.__('The schedule is paused: no run starts until it is resumed')
                : trans.__('The schedule is active')
            }
          >
            {schedule.paused ? trans.__('paused') : trans.__('active')}
          </span>
        ) : (
          <span className="jp-qmlops-chip" data-schedule="none">
            {trans.__('no schedule')}
          </span>
        )}
      </div>
      <div className="jp-qmlops-Meta">
        {schedule ? (
          <code
            className="jp-qmlops-Pipeline-cron"
            title={trans.__('Cron expression, read in %1', schedule.timezone)}
          >
            {schedule.cron}
          </code>
        ) : null}
        {schedule && schedule.timezone !== 'UTC' ? <span>{schedule.timezone}</span> : null}
        {until !== null ? (
          <span className="jp-qmlops-Pipeline-next" title={schedule?.next_due_at ?? ''}>
            {until <= 0
              ? trans.__('due now')
              : trans.__('next in %1', formatDuration(until).split(' ').slice(0, 4).join(' '))}
          </span>
        ) : null}
        <span className="jp-qmlops-Pipeline-last">
          {last ? (
            <>
              {trans.__('last run')} <StateChip state={last.state} trans={trans} />
            </>
          ) : (
            trans.__('never run')
          )}
        </span>
      </div>
      <div className="jp-qmlops-Row jp-qmlops-Pipeline-actions">
        <span className="jp-qmlops-Muted">{baseName(pipeline.notebook)}</span>
        <span className="jp-qmlops-Spacer" />
        {schedule ? (
          schedule.paused ? (
            <button
              className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
              data-action="resume-pipeline"
              disabled={busy}
              onClick={() => void act(CommandIDs.resumePipeline)}
              aria-label={trans.__('Resume pipeline %1', pipeline.name)}
            >
              {trans.__('Resume')}
            </button>
          ) : (
            <button
              className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
              data-action="pause-pipeline"
              disabled={busy}
              onClick={() => void act(CommandIDs.pausePipeline)}
              aria-label={trans.__('Pause pipeline %1', pipeline.name)}
            >
              {trans.__('Pause')}
            </button>
          )
        ) : null}
        <button
          className="jp-Button jp-mod-styled jp-mod-accept jp-qmlops-SmallButton"
          data-action="run-pipeline"
          disabled={busy}
          onClick={() => void act(CommandIDs.runPipeline)}
          aria-label={trans.__('Run pipeline %1 now', pipeline.name)}
        >
          {trans.__('Run now')}
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-warn jp-qmlops-SmallButton"
          data-action="delete-pipeline"
          disabled={busy}
          onClick={() => void act(CommandIDs.deletePipeline)}
          aria-label={trans.__('Delete pipeline %1', pipeline.name)}
        >
          {trans.__('Delete')}
        </button>
      </div>
    </li>
  );
}

function PipelineRunRow(props: {
  context: ISectionContext;
  run: IPipelineRun;
  pipelineName: string | null;
  now: number;
}): JSX.Element {
  const { commands, trans } = props.context;
  const { run, now } = props;
  const seconds = pipelineRunSeconds(run, now);
  const failed = run.state === 'FAILED' || run.state === 'TIMED_OUT';
  const parked = run.parked_jobs?.length ?? 0;
  return (
    <li
      className="jp-qmlops-PipelineRun"
      data-run-id={run.id}
      data-state={run.state}
      title={run.notebook}
    >
      <div className="jp-qmlops-Row">
        <span className="jp-qmlops-PipelineRun-notebook">{baseName(run.notebook)}</span>
        {props.pipelineName ? <span className="jp-qmlops-Muted">{props.pipelineName}</span> : null}
        <span className="jp-qmlops-Spacer" />
        <StateChip state={run.state} trans={trans} />
      </div>
      <div className="jp-qmlops-Meta">
        <span className="jp-qmlops-PipelineRun-started" title={run.started_at ?? run.created_at}>
          {run.started_at
            ? trans.__('started %1', formatAgo(run.started_at, now))
            : trans.__('queued %1', formatAgo(run.created_at, now))}
        </span>
        {seconds !== null ? (
          <span className="jp-qmlops-PipelineRun-duration" title={trans.__('Duration')}>
            {formatDuration(seconds)}
          </span>
        ) : null}
        {run.attempts > 1 ? <span>{trans.__('attempt %1', run.attempts)}</span> : null}
        {run.state === 'PARKED' ? (
          <span className="jp-qmlops-PipelineRun-parked">
            {trans._n('waiting for %1 job', 'waiting for %1 jobs', parked)}
          </span>
        ) : null}
        <span className="jp-qmlops-Spacer" />
        {run.mlflow_run_id ? (
          <button
            className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
            data-action="open-mlflow"
            onClick={() =>
              void commands.execute(CommandIDs.openMlflow, { runId: run.mlflow_run_id as string })
            }
            aria-label={trans.__('Open the MLflow run of %1', baseName(run.notebook))}
          >
            {trans.__('Open in MLflow')}
          </button>
        ) : null}
      </div>
      {failed && run.error ? (
        <div className="jp-qmlops-Job-error jp-qmlops-PipelineRun-error">
          {run.error_cell !== null ? trans.__('cell %1: %2', run.error_cell, run.error) : run.error}
        </div>
      ) : null}
    </li>
  );
}

// -- Runs ------------------------------------------------------------------------------------

export function RunsBody(context: ISectionContext): JSX.Element {
  const { model, trans, commands } = context;
  const runs = model.runs;
  const state = stateOf(runs, trans, trans.__('runs'), () => void model.refreshRuns());
  if (state) {
    return state;
  }
  if (runs.data.length === 0) {
    return (
      <Empty>
        <Prose
          text={trans.__(
            'No tracked runs yet. Every completed job is logged to MLflow; group jobs into one run with `with qmlops_jupyter.track("experiment"):` in a notebook.'
          )}
        />
        <div className="jp-qmlops-Actions">
          <button
            className="jp-Button jp-mod-styled"
            data-action="open-mlflow"
            onClick={() => void commands.execute(CommandIDs.openMlflow, {})}
          >
            {trans.__('Open MLflow')}
          </button>
        </div>
      </Empty>
    );
  }
  return (
    <ul className="jp-qmlops-List" aria-label={trans.__('Runs')}>
      {runs.data.map(run => {
        const metrics = Object.entries(run.metrics)
          .sort((a, b) => (a[0] < b[0] ? -1 : 1))
          .slice(0, 4);
        return (
          <li key={run.run_id} className="jp-qmlops-Run" data-run-id={run.run_id}>
            <div className="jp-qmlops-Row">
              <span className="jp-qmlops-Run-name" title={run.run_id}>
                {run.run_name ?? run.run_id.slice(0, 8)}
              </span>
              <span className="jp-qmlops-Spacer" />
              <span className="jp-qmlops-chip" data-run-status={run.status}>
                {run.status}
              </span>
            </div>
            <div className="jp-qmlops-Meta">
              <span>{run.experiment}</span>
              <span>{trans._n('%1 job', '%1 jobs', run.job_count)}</span>
              <span>{formatAgo(run.start_time)}</span>
            </div>
            {metrics.length ? (
              <dl className="jp-qmlops-Metrics">
                {metrics.map(([name, value]) => (
                  <React.Fragment key={name}>
                    <dt>{name}</dt>
                    <dd>{formatNumber(value)}</dd>
                  </React.Fragment>
                ))}
              </dl>
            ) : null}
            <div className="jp-qmlops-Row">
              {run.job_ids.slice(0, 3).map(id => (
                <button
                  key={id}
                  className="jp-Button jp-mod-styled jp-qmlops-SmallButton jp-qmlops-LinkButton"
                  data-action="open-job"
                  onClick={() => void commands.execute(CommandIDs.openJob, { id })}
                  title={trans.__('Open job %1', id)}
                >
                  {shortId(id)}
                </button>
              ))}
              <span className="jp-qmlops-Spacer" />
              <button
                className="jp-Button jp-mod-styled jp-qmlops-SmallButton"
                data-action="open-mlflow"
                onClick={() =>
                  void commands.execute(CommandIDs.openMlflow, {
                    runId: run.run_id,
                    experimentId: run.experiment_id
                  })
                }
              >
                {trans.__('Open in MLflow')}
              </button>
            </div>
          </li>
        );
      })}
    </ul>
  );
}

// -- Budget ----------------------------------------------------------------------------------

function Meter(props: {
  limit: IBudgetLimit;
  format: (n: number) => string;
  trans: TranslationBundle;
  label: string;
}): JSX.Element {
  const { limit, trans } = props;
  const share = limit.limit > 0 ? Math.min(1, limit.used / limit.limit) : limit.used > 0 ? 1 : 0;
  return (
    <div className="jp-qmlops-Meter-cell">
      <div
        className="jp-qmlops-Meter"
        role="meter"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={limit.limit}
        aria-valuenow={limit.used}
        data-level={share >= 1 ? 'over' : share >= 0.8 ? 'high' : 'ok'}
      >
        <div className="jp-qmlops-Meter-fill" style={{ width: `${Math.round(share * 100)}%` }} />
      </div>
      <span className="jp-qmlops-Budget-used">
        {trans.__('%1 of %2 used', props.format(limit.used), props.format(limit.limit))}
      </span>
      <span className="jp-qmlops-Budget-remaining jp-qmlops-Muted">
        {trans.__('%1 left', props.format(limit.remaining))}
      </span>
    </div>
  );
}

export function BudgetBody(context: ISectionContext): JSX.Element {
  const { model, trans } = context;
  const budget = model.budget;
  const state = stateOf(budget, trans, trans.__('budgets'), () => void model.refreshBudget());
  if (state) {
    return state;
  }
  if (budget.data.length === 0) {
    return (
      <Empty>
        <Prose
          text={trans.__(
            'No budget is set, so nothing limits shots or spending. Set one in a terminal: `qmlops budget set --shots-per-day 100000 --usd-per-month 50`.'
          )}
        />
      </Empty>
    );
  }
  const usd = (n: number) => formatUsd(n) ?? '–';
  const shots = (n: number) => formatNumber(n);
  return (
    <table className="jp-qmlops-Budget">
      <thead>
        <tr>
          <th scope="col">{trans.__('Backend')}</th>
          <th scope="col">{trans.__('Shots today')}</th>
          <th scope="col">{trans.__('Spend this month')}</th>
        </tr>
      </thead>
      <tbody>
        {budget.data.map(row => (
          <tr key={row.backend} data-budget-backend={row.backend}>
            <th scope="row">{row.backend === '*' ? trans.__('all backends') : row.backend}</th>
            <td data-limit="shots_per_day">
              {row.shots_per_day ? (
                <Meter
                  limit={row.shots_per_day}
                  format={shots}
                  trans={trans}
                  label={trans.__('Shots today on %1', row.backend)}
                />
              ) : (
                <span className="jp-qmlops-Muted">{trans.__('no limit')}</span>
              )}
            </td>
            <td data-limit="usd_per_month">
              {row.usd_per_month ? (
                <Meter
                  limit={row.usd_per_month}
                  format={usd}
                  trans={trans}
                  label={trans.__('Spend this month on %1', row.backend)}
                />
              ) : (
                <span className="jp-qmlops-Muted">{trans.__('no limit')}</span>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// -- Dashboards ------------------------------------------------------------------------------

/**
 * A link to the Voila page of each dashboard this server can show (a new browser tab, behind
 * the server's login); the server's hint when one cannot be shown (Voila missing, or the
 * notebooks not under the server's root).
 */
export function DashboardsBody(context: ISectionContext): JSX.Element {
  const { model, trans } = context;
  const dashboards = model.dashboards;
  const state = stateOf(dashboards, trans, trans.__('dashboards'), () => {
    void model.refreshDashboards();
  });
  if (state) {
    return state;
  }
  const linked = dashboards.data.filter(board => !!board.url);
  const hint = model.dashboardsHint;
  if (linked.length === 0) {
    return (
      <Empty>
        <Prose text={hint ?? trans.__('This server shows no dashboard.')} />
      </Empty>
    );
  }
  return (
    <>
      <ul className="jp-qmlops-List" aria-label={trans.__('Dashboards')}>
        {linked.map(board => (
          <li key={board.name} className="jp-qmlops-Dashboard">
            <a
              className="jp-qmlops-Dashboard-link"
              href={board.url as string}
              target="_blank"
              rel="noopener noreferrer"
              data-dashboard={board.name}
              title={board.description}
            >
              {board.title}
            </a>
          </li>
        ))}
      </ul>
      {hint ? (
        <div className="jp-qmlops-Muted jp-qmlops-Dashboards-hint">
          <Prose text={hint} />
        </div>
      ) : null}
    </>
  );
}
