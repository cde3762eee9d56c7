/**
 * A job's detail in the main area: its state, timings and cost, each circuit's OpenQASM and
 * counts histogram, its error, its event log and a link to its MLflow run. It follows the job
 * live: every change the model sees re-reads it.
 */
import * as React from 'react';
import { CommandRegistry } from '@lumino/commands';
import { ReactWidget } from '@jupyterlab/ui-components';
import { TranslationBundle } from '@jupyterlab/translation';
import { describeError } from './model';
import { StateChip } from './sections';
import { Histogram } from './histogram';
import {
  elapsedSeconds,
  formatDuration,
  formatNumber,
  formatTime,
  formatUsd,
  shortId
} from './format';
import { CANCELLABLE_STATES, CommandIDs, IJobDetail, IJobRecord, IQmlopsModel } from './tokens';
import type { QmlopsClient } from './api';

export class JobDetailWidget extends ReactWidget {
  constructor(
    readonly jobId: string,
    private readonly _options: {
      client: QmlopsClient;
      model: IQmlopsModel;
      commands: CommandRegistry;
      trans: TranslationBundle;
    }
  ) {
    super();
    this.id = `qmlops-job-${jobId}`;
    this.addClass('jp-qmlops-JobDetailWidget');
    this.title.label = _options.trans.__('Job %1', shortId(jobId));
    this.title.closable = true;
    _options.model.jobChanged.connect(this._onJobChanged, this);
    void this.load();
  }

  /** Read the job again (with its circuits' OpenQASM and its event log). */
  async load(): Promise<void> {
    try {
      this._job = await this._options.client.job(this.jobId, { qasm: true, events: true });
      this._error = null;
      this.title.label = this._job.name
        ? `${this._job.name} (${shortId(this.jobId)})`
        : this._options.trans.__('Job %1', shortId(this.jobId));
    } catch (error) {
      this._error = describeError(error);
    }
    this.update();
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._options.model.jobChanged.disconnect(this._onJobChanged, this);
    }
    super.dispose();
  }

  render(): JSX.Element {
    const { trans, commands, model } = this._options;
    const job = this._job;
    if (!job) {
      return this._error ? (
        <div className="jp-qmlops-JobDetail" data-state="">
          <div className="jp-qmlops-Error" role="alert">
            <span className="jp-qmlops-Error-message">{this._error}</span>
            <button
              className="jp-Button jp-mod-styled jp-mod-reject"
              data-action="retry"
              onClick={() => void this.load()}
            >
              {trans.__('Retry')}
            </button>
          </div>
        </div>
      ) : (
        <div className="jp-qmlops-JobDetail" data-state="">
          <div className="jp-qmlops-Loading" role="status">
            {trans.__('Loading job %1…', shortId(this.jobId))}
          </div>
        </div>
      );
    }
    const cost = formatUsd(job.actual_cost_usd);
    const estimate = formatUsd(job.estimated_cost_usd);
    const phases = Object.entries(job.phases ?? {});
    return (
      <div className="jp-qmlops-JobDetail" data-state={job.state} data-job-id={job.id}>
        <header className="jp-qmlops-Row">
          <h2 className="jp-qmlops-JobDetail-title">
            {job.name ?? trans.__('Job %1', shortId(job.id))}
          </h2>
          <StateChip state={job.state} trans={trans} />
          <span className="jp-qmlops-Spacer" />
          {CANCELLABLE_STATES.has(job.state) ? (
            <button
              className="jp-Button jp-mod-styled jp-mod-warn"
              data-action="cancel-job"
              onClick={() => void model.cancelJob(job.id).catch(error => this._fail(error))}
            >
              {trans.__('Cancel job')}
            </button>
          ) : null}
          {job.mlflow_run_id ? (
            <button
              className="jp-Button jp-mod-styled"
              data-action="open-mlflow"
              onClick={() =>
                void commands.execute(CommandIDs.openMlflow, {
                  runId: job.mlflow_run_id!,
                  // The run's page needs its experiment: known when the run is listed.
                  experimentId:
                    model.runs.data.find(run => run.run_id === job.mlflow_run_id)?.experiment_id ??
                    ''
                })
              }
            >
              {trans.__('Open run in MLflow')}
            </button>
          ) : null}
        </header>
        {this._error ? (
          <div className="jp-qmlops-Error" role="alert">
            <span className="jp-qmlops-Error-message">{this._error}</span>
          </div>
        ) : null}
        <dl className="jp-qmlops-Facts">
          <dt>{trans.__('Job id')}</dt>
          <dd>
            <code>{job.id}</code>
          </dd>
          <dt>{trans.__('Backend')}</dt>
          <dd>{job.backend}</dd>
          <dt>{trans.__('Shots')}</dt>
          <dd>{formatNumber(job.shots)}</dd>
          {job.provider_job_id ? (
            <>
              <dt>{trans.__('Provider job')}</dt>
              <dd>
                <code>{job.provider_job_id}</code>
              </dd>
            </>
          ) : null}
          <dt>{trans.__('Created')}</dt>
          <dd>{formatTime(job.created_at)}</dd>
          {job.finished_at ? (
            <>
              <dt>{trans.__('Finished')}</dt>
              <dd>{formatTime(job.finished_at)}</dd>
            </>
          ) : null}
          <dt>{trans.__('Elapsed')}</dt>
          <dd>{formatDuration(elapsedSeconds(job))}</dd>
          {job.queue_position !== null ? (
            <>
              <dt>{trans.__('Queue position')}</dt>
              <dd>{job.queue_position}</dd>
            </>
          ) : null}
          <dt>{trans.__('Cost')}</dt>
          <dd className="jp-qmlops-JobDetail-cost">
            {cost ?? (estimate ? trans.__('%1 (estimated)', estimate) : trans.__('unknown'))}
          </dd>
          {phases.length ? (
            <>
              <dt>{trans.__('Phases')}</dt>
              <dd>
                {phases.map(([name, seconds]) => `${name} ${formatDuration(seconds)}`).join(' · ')}
              </dd>
            </>
          ) : null}
          {job.mlflow_run_id ? (
            <>
              <dt>{trans.__('MLflow run')}</dt>
              <dd>
                <code>{job.mlflow_run_id}</code>
              </dd>
            </>
          ) : null}
        </dl>
        {job.error ? (
          <div className="jp-qmlops-JobDetail-error" role="alert">
            <strong>{job.error_kind ? `${job.error_kind}: ` : ''}</strong>
            {job.error}
          </div>
        ) : null}
        {job.circuits.map((circuit, index) => {
          const counts = job.result?.counts?.[index];
          const qasm = job.qasm3?.[index];
          return (
            <section key={index} className="jp-qmlops-Circuit" data-circuit={index}>
              <h3>
                {trans.__('Circuit %1', index)}
                {circuit.name ? ` · ${circuit.name}` : ''}
                <span className="jp-qmlops-Muted">
                  {' '}
                  {trans.__(
                    '%1 qubits, depth %2, %3 gates',
                    circuit.num_qubits,
                    circuit.depth,
                    circuit.size
                  )}
                </span>
              </h3>
              {counts ? (
                <Histogram counts={counts} trans={trans} />
              ) : (
                <div className="jp-qmlops-Muted">
                  {CANCELLABLE_STATES.has(job.state) || job.state === 'CANCELLING'
                    ? trans.__('The counts appear here when the job completes.')
                    : trans.__('No counts: the job did not complete.')}
                </div>
              )}
              {qasm ? (
                <details open={index === 0}>
                  <summary>{trans.__('OpenQASM 3')}</summary>
                  <pre className="jp-qmlops-Qasm">{qasm}</pre>
                </details>
              ) : null}
            </section>
          );
        })}
        {job.result?.expectation_values?.length ? (
          <section>
            <h3>{trans.__('Expectation values')}</h3>
            <pre>{job.result.expectation_values.map(v => formatNumber(v, 6)).join('\n')}</pre>
          </section>
        ) : null}
        {job.events?.length ? (
          <details className="jp-qmlops-Events">
            <summary>{trans.__('Event log (%1)', job.events.length)}</summary>
            <table>
              <tbody>
                {job.events.map(event => (
                  <tr key={event.seq}>
                    <td>{formatTime(event.at)}</td>
                    <td>
                      {event.from_state ?? '–'} → {event.to_state ?? event.kind}
                    </td>
                    <td className="jp-qmlops-Muted">{event.message ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </details>
        ) : null}
      </div>
    );
  }

  private _fail(error: unknown): void {
    this._error = describeError(error);
    this.update();
  }

  private _onJobChanged(_: IQmlopsModel, job: IJobRecord): void {
    if (job.id !== this.jobId) {
      return;
    }
    if (this._job && this._job.state !== job.state) {
      this._job = { ...this._job, state: job.state };
      this.update();
    }
    void this.load();
  }

  private _job: IJobDetail | null = null;
  private _error: string | null = null;
}
