/**
 * The qmlops JupyterLab extension: a service plugin (the REST client and the live model, for
 * any extension to require) and the sidebar plugin (the left panel with Backends, Jobs,
 * Pipelines, Runs, Budget and Dashboards; a job's detail and the MLflow UI in the main area; a status-bar item; a command
 * for every action, in the command palette).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  showDialog,
  WidgetTracker
} from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { IFrame, LabIcon, SidePanel, refreshIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { Signal } from '@lumino/signaling';
import { AccordionPanel } from '@lumino/widgets';
import { QmlopsClient } from './api';
import { JobDetailWidget } from './jobdetail';
import { describeError, QmlopsModel } from './model';
import {
  BackendsBody,
  BudgetBody,
  DashboardsBody,
  JobsBody,
  PipelinesBody,
  RunsBody,
  SectionWidget,
  ISectionContext
} from './sections';
import { QmlopsStatusItem } from './status';
import { CommandIDs, IPipeline, IQmlopsService, TERMINAL_STATES } from './tokens';
import { shortId } from './format';

export * from './tokens';
export { QmlopsClient, QmlopsApiError, requestAPI } from './api';
export { QmlopsModel } from './model';

const PLUGIN_ID = 'qmlops-jupyter:plugin';
const SIDEBAR_ID = 'qmlops-sidebar';
const MLFLOW_ID = 'qmlops-mlflow';

/** An atom: the sidebar's tab icon. */
export const qmlopsIcon = new LabIcon({
  name: 'qmlops-jupyter:atom',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="none" stroke="#616161" stroke-width="1.6">
    <ellipse cx="12" cy="12" rx="10" ry="4"/>
    <ellipse cx="12" cy="12" rx="10" ry="4" transform="rotate(60 12 12)"/>
    <ellipse cx="12" cy="12" rx="10" ry="4" transform="rotate(120 12 12)"/>
  </g>
  <circle class="jp-icon3" cx="12" cy="12" r="2" fill="#616161"/>
</svg>`
});

/** The REST client and the live model, shared by every qmlops plugin. */
const service: JupyterFrontEndPlugin<IQmlopsService> = {
  id: 'qmlops-jupyter:service',
  description: 'The qmlops REST client and the live model of backends, jobs, runs and budgets.',
  autoStart: true,
  provides: IQmlopsService,
  activate: (app: JupyterFrontEnd): IQmlopsService => {
    const client = new QmlopsClient(app.serviceManager.serverSettings);
    const model = new QmlopsModel({
      client,
      events: app.serviceManager.events ?? null
    });
    return { client, model };
  }
};

/** The sidebar, the job and MLflow tabs, the status-bar item and the commands. */
const sidebar: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'The quantum jobs sidebar: backends and credentials, live jobs, pipelines, MLflow runs, budgets, dashboards.',
  autoStart: true,
  requires: [IQmlopsService],
  optional: [ILayoutRestorer, ICommandPalette, IStatusBar, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    qmlops: IQmlopsService,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load('qmlops_jupyter');
    const { client, model } = qmlops;
    const { commands, shell } = app;
    let defaultBackend = 'aer';

    const context: ISectionContext = {
      model,
      commands,
      trans,
      credentialFormRequested: new Signal<object, void>({}),
      defaultBackend: () => defaultBackend
    };

    // -- the panel ---------------------------------------------------------------------------
    const panel = new SidePanel({ translator: translator ?? nullTranslator });
    panel.id = SIDEBAR_ID;
    panel.addClass('jp-qmlops-Sidebar');
    panel.title.icon = qmlopsIcon;
    panel.title.caption = trans.__('Quantum jobs (qmlops)');
    const heading = document.createElement('h2');
    heading.className = 'jp-qmlops-Sidebar-heading';
    heading.textContent = trans.__('Quantum jobs');
    panel.header.node.appendChild(heading);
    panel.toolbar.addItem(
      'refresh',
      new ToolbarButton({
        icon: refreshIcon,
        tooltip: trans.__('Refresh backends, jobs, pipelines, runs, budgets and dashboards'),
        onClick: () => void commands.execute(CommandIDs.refresh)
      })
    );
    const sections: [string, SectionWidget][] = [
      [trans.__('Backends'), new SectionWidget('backends', context, BackendsBody)],
      [trans.__('Jobs'), new SectionWidget('jobs', context, JobsBody)],
      [trans.__('Pipelines'), new SectionWidget('pipelines', context, PipelinesBody)],
      [trans.__('Runs'), new SectionWidget('runs', context, RunsBody)],
      [trans.__('Budget'), new SectionWidget('budget', context, BudgetBody)],
      [trans.__('Dashboards'), new SectionWidget('dashboards', context, DashboardsBody)]
    ];
    for (const [label, widget] of sections) {
      widget.title.label = label;
      panel.addWidget(widget);
    }
    shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, SIDEBAR_ID);
    }
    const openSection = (name: string) => {
      shell.activateById(SIDEBAR_ID);
      const index = sections.findIndex(([, widget]) => widget.id === `qmlops-section-${name}`);
      (panel.content as AccordionPanel).expand(index);
    };

    // -- the job detail tabs -----------------------------------------------------------------
    const jobs = new WidgetTracker<MainAreaWidget<JobDetailWidget>>({ namespace: 'qmlops-job' });
    if (restorer) {
      void restorer.restore(jobs, {
        command: CommandIDs.openJob,
        args: widget => ({ id: widget.content.jobId }),
        name: widget => widget.content.jobId
      });
    }

    const pickJob = async (title: string, onlyActive: boolean): Promise<string | null> => {
      const candidates = model.jobs.data.filter(
        job => !onlyActive || !TERMINAL_STATES.has(job.state)
      );
      if (candidates.length === 0) {
        const answer = await InputDialog.getText({
          title,
          label: trans.__('Job id (or its first characters)')
        });
        return answer.button.accept && answer.value ? answer.value.trim() : null;
      }
      const labels = candidates.map(
        job => `${job.name ?? shortId(job.id)} · ${job.state} · ${job.backend} · ${job.id}`
      );
      const answer = await InputDialog.getItem({ title, items: labels });
      if (!answer.button.accept || answer.value === null) {
        return null;
      }
      return candidates[labels.indexOf(answer.value)]?.id ?? null;
    };

    const pickCredential = async (title: string): Promise<string | null> => {
      if (model.credentials.status !== 'ready') {
        await model.refreshBackends();
      }
      const aliases = model.credentials.data.map(c => c.alias);
      if (aliases.length === 0) {
        Notification.info(trans.__('No credentials are stored. Add one from the qmlops sidebar.'), {
          autoClose: 5000
        });
        return null;
      }
      const answer = await InputDialog.getItem({ title, items: aliases });
      return answer.button.accept ? answer.value : null;
    };

    /** A saved pipeline's name: `given`, else picked from those `fits` keeps. */
    const pickPipeline = async (
      title: string,
      given: unknown,
      fits: (pipeline: IPipeline) => boolean = () => true
    ): Promise<string | null> => {
      if (typeof given === 'string' && given) {
        return given;
      }
      if (model.pipelines.status !== 'ready') {
        await model.refreshPipelines();
      }
      const names = model.pipelines.data.filter(fits).map(p => p.name);
      if (names.length === 0) {
        Notification.info(
          trans.__(
            'No saved pipeline fits. Save one with: qmlops pipeline schedule NOTEBOOK --cron "0 3 * * *"'
          ),
          { autoClose: 6000 }
        );
        return null;
      }
      const answer = await InputDialog.getItem({ title, items: names });
      return answer.button.accept ? answer.value : null;
    };
    const pipelineArgs = (what: string) => ({
      args: {
        type: 'object',
        properties: {
          name: {
            type: 'string',
            description: `the saved pipeline ${what}, by name or id (asked for when absent)`
          }
        }
      }
    });

    // -- commands ----------------------------------------------------------------------------
    commands.addCommand(CommandIDs.openSidebar, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Open the Quantum Jobs Sidebar'),
      caption: trans.__('Show backends, credentials, jobs, pipelines, runs and budgets'),
      icon: args => (args.isPalette ? undefined : qmlopsIcon),
      execute: () => shell.activateById(SIDEBAR_ID)
    });
    commands.addCommand(CommandIDs.refresh, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Refresh Quantum Jobs'),
      execute: async () => {
        await model.refresh().catch(() => undefined);
      }
    });
    commands.addCommand(CommandIDs.addCredential, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Add a Quantum Backend Credential…'),
      execute: () => {
        openSection('backends');
        context.credentialFormRequested.emit();
      }
    });
    commands.addCommand(CommandIDs.testCredential, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            alias: { type: 'string', description: 'the credential to test (asked for when absent)' }
          }
        }
      },
      label: trans.__('Test a Quantum Backend Credential…'),
      execute: async args => {
        const alias =
          (args.alias as string) || (await pickCredential(trans.__('Test a credential')));
        if (!alias) {
          return;
        }
        try {
          const answer = await model.testCredential(alias);
          const text = trans.__('Credential "%1": %2', alias, answer.message);
          if (answer.ok) {
            Notification.success(text, { autoClose: 5000 });
          } else {
            Notification.error(text, { autoClose: false });
          }
          return answer;
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.deleteCredential, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            alias: {
              type: 'string',
              description: 'the credential to delete (asked for when absent)'
            }
          }
        }
      },
      label: trans.__('Delete a Quantum Backend Credential…'),
      execute: async args => {
        const alias =
          (args.alias as string) || (await pickCredential(trans.__('Delete a credential')));
        if (!alias) {
          return;
        }
        try {
          await model.deleteCredential(alias);
          Notification.success(trans.__('Credential "%1" deleted.', alias), { autoClose: 5000 });
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.openJob, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            id: {
              type: 'string',
              description: 'a job id or a unique prefix of one (asked for when absent)'
            }
          }
        }
      },
      label: trans.__('Open a Quantum Job…'),
      caption: trans.__("A job's circuits, counts histogram, error and MLflow run"),
      execute: async args => {
        const given = (args.id as string) || (await pickJob(trans.__('Open a job'), false));
        if (!given) {
          return;
        }
        let id = given;
        if (given.length < 16) {
          try {
            id = (await client.job(given)).id; // a prefix, as the CLI takes it
          } catch (error) {
            Notification.error(describeError(error), { autoClose: 5000 });
            return;
          }
        }
        const existing = jobs.find(widget => widget.content.jobId === id);
        if (existing) {
          shell.activateById(existing.id);
          void existing.content.load();
          return existing;
        }
        const content = new JobDetailWidget(id, { client, model, commands, trans });
        const widget = new MainAreaWidget({ content });
        widget.id = `qmlops-job-${id}`;
        content.id = `qmlops-job-content-${id}`;
        widget.title.icon = qmlopsIcon;
        widget.title.closable = true;
        content.title.changed.connect(() => {
          widget.title.label = content.title.label;
        });
        widget.title.label = content.title.label;
        void jobs.add(widget);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
        return widget;
      }
    });
    commands.addCommand(CommandIDs.cancelJob, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            id: { type: 'string', description: 'the job to cancel (asked for when absent)' }
          }
        }
      },
      label: trans.__('Cancel a Quantum Job…'),
      execute: async args => {
        const id = (args.id as string) || (await pickJob(trans.__('Cancel a job'), true));
        if (!id) {
          return;
        }
        try {
          const job = await model.cancelJob(id);
          Notification.info(trans.__('Job %1 is %2.', job.name ?? shortId(job.id), job.state), {
            autoClose: 4000
          });
          return job;
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.submitTestJob, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            backend: {
              type: 'string',
              description: 'where the Bell pair goes (default: the defaultBackend setting)'
            }
          }
        }
      },
      label: args =>
        args.backend
          ? trans.__('Run a Bell Test Job on %1', args.backend as string)
          : trans.__('Run a Bell Test Job on the Default Backend'),
      execute: async args => {
        const backend = (args.backend as string) || defaultBackend;
        try {
          const job = await model.submitTestJob(backend);
          Notification.info(
            trans.__('Submitted %1 (%2) to %3.', job.name ?? 'job', shortId(job.id), backend),
            {
              autoClose: 4000,
              actions: [
                {
                  label: trans.__('Open'),
                  callback: () => void commands.execute(CommandIDs.openJob, { id: job.id })
                }
              ]
            }
          );
          return job;
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.openMlflow, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            runId: {
              type: 'string',
              description: 'the id of an MLflow run (absent: the MLflow home page)'
            },
            experimentId: { type: 'string', description: 'the experiment of the run' }
          }
        }
      },
      label: args => (args.runId ? trans.__('Open Run in MLflow') : trans.__('Open MLflow')),
      caption: trans.__('The MLflow UI inside JupyterLab (served through jupyter-server-proxy)'),
      execute: args => {
        const runId = args.runId as string | undefined;
        const experimentId = args.experimentId as string | undefined;
        let url = client.mlflowUrl();
        if (runId && experimentId) {
          url = client.mlflowUrl({ run_id: runId, experiment_id: experimentId });
        } else if (runId) {
          url = `${url}#/runs/${encodeURIComponent(runId)}`;
        }
        const existing = shell.widgets('main');
        for (const widget of existing) {
          if (widget.id === MLFLOW_ID) {
            ((widget as MainAreaWidget<IFrame>).content as IFrame).url = url;
            shell.activateById(MLFLOW_ID);
            return;
          }
        }
        const frame = new IFrame({
          sandbox: [
            'allow-scripts',
            'allow-same-origin',
            'allow-forms',
            'allow-popups',
            'allow-downloads'
          ],
          referrerPolicy: 'same-origin'
        });
        frame.url = url;
        const widget = new MainAreaWidget({ content: frame });
        widget.id = MLFLOW_ID;
        widget.title.label = trans.__('MLflow');
        widget.title.icon = qmlopsIcon;
        widget.title.closable = true;
        shell.add(widget, 'main');
        shell.activateById(MLFLOW_ID);
      }
    });
    commands.addCommand(CommandIDs.showBudget, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Show the Quantum Budget'),
      execute: () => {
        openSection('budget');
        void model.refreshBudget();
      }
    });
    commands.addCommand(CommandIDs.showPipelines, {
      describedBy: { args: { type: 'object', properties: {} } },
      label: trans.__('Show the Saved Pipelines'),
      caption: trans.__('Saved pipelines, their schedules and recent runs'),
      execute: () => {
        openSection('pipelines');
        void model.refreshPipelines();
      }
    });
    commands.addCommand(CommandIDs.runPipeline, {
      describedBy: pipelineArgs('to run now'),
      label: trans.__('Run a Saved Pipeline Now…'),
      execute: async args => {
        const name = await pickPipeline(trans.__('Run a pipeline now'), args.name);
        if (!name) {
          return;
        }
        try {
          const run = await model.runPipelineNow(name);
          Notification.info(
            trans.__('Pipeline %1: run %2 is %3.', name, shortId(run.id), run.state),
            {
              autoClose: 4000
            }
          );
          return run;
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.pausePipeline, {
      describedBy: pipelineArgs('to pause'),
      label: trans.__('Pause a Pipeline Schedule…'),
      execute: async args => {
        const name = await pickPipeline(
          trans.__('Pause a pipeline'),
          args.name,
          p => !!p.schedule && !p.schedule.paused
        );
        if (!name) {
          return;
        }
        try {
          return await model.pausePipeline(name);
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.resumePipeline, {
      describedBy: pipelineArgs('to resume'),
      label: trans.__('Resume a Pipeline Schedule…'),
      execute: async args => {
        const name = await pickPipeline(
          trans.__('Resume a pipeline'),
          args.name,
          p => !!p.schedule && p.schedule.paused
        );
        if (!name) {
          return;
        }
        try {
          return await model.resumePipeline(name);
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    commands.addCommand(CommandIDs.deletePipeline, {
      describedBy: pipelineArgs('to delete'),
      label: trans.__('Delete a Saved Pipeline…'),
      execute: async args => {
        const name = await pickPipeline(trans.__('Delete a pipeline'), args.name);
        if (!name) {
          return;
        }
        const answer = await showDialog({
          title: trans.__('Delete pipeline'),
          body: trans.__(
            'Delete the pipeline "%1" and its schedule? Its past runs and their notebooks are kept.',
            name
          ),
          buttons: [
            Dialog.cancelButton({ label: trans.__('Cancel') }),
            Dialog.warnButton({ label: trans.__('Delete') })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          await model.deletePipeline(name);
          Notification.success(trans.__('Pipeline "%1" deleted.', name), { autoClose: 5000 });
        } catch (error) {
          Notification.error(describeError(error), { autoClose: false });
        }
      }
    });
    if (palette) {
      for (const command of [
        CommandIDs.openSidebar,
        CommandIDs.refresh,
        CommandIDs.addCredential,
        CommandIDs.testCredential,
        CommandIDs.deleteCredential,
        CommandIDs.openJob,
        CommandIDs.cancelJob,
        CommandIDs.submitTestJob,
        CommandIDs.openMlflow,
        CommandIDs.showBudget,
        CommandIDs.showPipelines,
        CommandIDs.runPipeline,
        CommandIDs.pausePipeline,
        CommandIDs.resumePipeline,
        CommandIDs.deletePipeline
      ]) {
        palette.addItem({
          command,
          category: trans.__('Quantum jobs (qmlops)'),
          args: { isPalette: true }
        });
      }
    }

    // -- the status bar ----------------------------------------------------------------------
    if (statusBar) {
      statusBar.registerStatusItem('qmlops-jupyter:status', {
        item: new QmlopsStatusItem(model, trans, () => shell.activateById(SIDEBAR_ID)),
        align: 'left',
        rank: 5
      });
    }

    // -- settings ----------------------------------------------------------------------------
    if (settingRegistry) {
      void settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => {
            defaultBackend = (settings.get('defaultBackend').composite as string) || 'aer';
            const interval = settings.get('refreshInterval').composite as number;
            if (model instanceof QmlopsModel && typeof interval === 'number') {
              model.refreshInterval = interval;
            }
            void model.refreshJobs().catch(() => undefined);
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => console.error('qmlops-jupyter: could not load its settings', reason));
    }
  }
};

export default [service, sidebar];
