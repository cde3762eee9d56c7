// The credential form of qmlops_jupyter (an anywidget ES module).
//
// The secret goes from this browser page straight to the Jupyter server's credential route,
// PUT <baseUrl>qmlops/api/v1/credentials/<alias>, authenticated like JupyterLab's own requests
// (the page's token and the _xsrf cookie). Secret inputs are password fields bound to no model
// trait and cleared once saved: only the alias, the provider, a status line and the server's
// masked answer go back to the kernel, so nothing secret can end up in widget state or a saved
// notebook.

const API = "qmlops/api/v1";
const MASKED_KEYS = ["alias", "provider", "hint", "created_at", "updated_at", "last_used_at"];
const NO_SERVER =
  "This form saves credentials through a Jupyter server running qmlops, and this page was " +
  "not served by one. Open the notebook in JupyterLab, or run " +
  "'qmlops creds set ALIAS --provider PROVIDER' in a terminal.";

/** The page's Jupyter configuration (baseUrl, token), or null outside a Jupyter server page. */
function pageConfig() {
  const el = document.getElementById("jupyter-config-data");
  if (!el) {
    return null;
  }
  try {
    const config = JSON.parse(el.textContent || "{}");
    return config && typeof config.baseUrl === "string" ? config : null;
  } catch {
    return null;
  }
}

function cookie(name) {
  const found = document.cookie.match("\\b" + name + "=([^;]*)\\b");
  return found ? found[1] : undefined;
}

/** One request to the qmlops API: {ok, status, data}. Never throws. */
async function request(config, method, path, body) {
  let base = config.baseUrl || "/";
  if (!base.endsWith("/")) {
    base += "/";
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  if (config.token) {
    headers["Authorization"] = `token ${config.token}`;
  }
  const xsrf = cookie("_xsrf");
  if (xsrf) {
    headers["X-XSRFToken"] = xsrf;
  }
  let response;
  try {
    response = await fetch(`${base}${API}/${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    return { ok: false, status: 0, data: { message: `the server did not answer (${err.name})` } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

function why(answer) {
  const message = answer.data && typeof answer.data.message === "string" ? answer.data.message : "";
  if (answer.status === 403 || answer.status === 401) {
    return message || "the server refused this page's authentication (reload the page)";
  }
  if (answer.status === 404 && !message) {
    return "the server has no qmlops API (is the qmlops server extension enabled?)";
  }
  return message || `the server answered ${answer.status}`;
}

function masked(info) {
  const out = {};
  for (const key of MASKED_KEYS) {
    if (info && info[key] !== undefined && info[key] !== null) {
      out[key] = String(info[key]);
    }
  }
  return out;
}

function make(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") {
      node.className = value;
    } else if (key === "text") {
      node.textContent = value;
    } else {
      node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    node.appendChild(child);
  }
  return node;
}

function render({ model, el }) {
  const config = pageConfig();
  const form = make("form", {
    className: "qmlops-credential-form",
    "aria-label": "qmlops credential",
    autocomplete: "off",
  });
  const aliasInput = make("input", {
    className: "qmlops-cred-alias",
    type: "text",
    id: `qmlops-cred-alias-${Math.random().toString(36).slice(2)}`,
    "aria-label": "credential alias",
    placeholder: "e.g. ionq-main",
    spellcheck: "false",
    autocomplete: "off",
  });
  const providerSelect = make("select", {
    className: "qmlops-cred-provider",
    id: `qmlops-cred-provider-${Math.random().toString(36).slice(2)}`,
    "aria-label": "provider",
  });
  const fieldsBox = make("div", { className: "qmlops-cred-fields", style: "display: contents" });
  const saveButton = make("button", {
    className: "qmlops-cred-save",
    type: "submit",
    text: "Save",
  });
  const testButton = make("button", {
    className: "qmlops-cred-test",
    type: "button",
    text: "Test",
  });
  const status = make("div", {
    className: "qmlops-cred-status",
    role: "status",
    "aria-live": "polite",
    "data-state": "idle",
  });
  const savedLine = make("div", { className: "qmlops-cred-saved" });
  const storedLine = make("div", { className: "qmlops-cred-stored" });

  form.append(
    make("label", { for: aliasInput.id, text: "alias" }),
    aliasInput,
    make("label", { for: providerSelect.id, text: "provider" }),
    providerSelect,
    fieldsBox,
    make("span"),
    make("div", { className: "qmlops-cred-buttons" }, [saveButton, testButton]),
    status,
    savedLine,
    storedLine,
  );
  el.appendChild(form);

  let fieldInputs = [];
  let busy = false;

  function setStatus(state, text, { share = true } = {}) {
    status.dataset.state = state;
    status.textContent = text;
    if (share && model.get("status") !== text) {
      model.set("status", text);
      model.save_changes();
    }
  }

  function providers() {
    return model.get("providers") || {};
  }

  function buildProviderOptions() {
    const names = Object.keys(providers()).sort();
    providerSelect.replaceChildren(
      ...names.map((name) => make("option", { value: name, text: name })),
    );
    providerSelect.value = model.get("provider");
  }

  function buildFields() {
    const spec = providers()[model.get("provider")] || { fields: [] };
    fieldInputs = [];
    const nodes = [];
    for (const field of spec.fields) {
      const id = `qmlops-cred-${field.name}-${Math.random().toString(36).slice(2)}`;
      const label = field.label + (field.required ? "" : " (optional)");
      const input = make("input", {
        id,
        className: `qmlops-cred-field qmlops-cred-field-${field.name}`,
        type: field.secret ? "password" : "text",
        "data-field": field.name,
        "aria-label": `${model.get("provider")} ${field.label}`,
        // Keep password managers and autofill away from provider keys.
        autocomplete: field.secret ? "new-password" : "off",
        spellcheck: "false",
      });
      if (field.required) {
        input.required = true;
      }
      fieldInputs.push({ field, input });
      nodes.push(make("label", { for: id, text: label }), input);
    }
    fieldsBox.replaceChildren(...nodes);
    setDisabled(busy);
  }

  function showSaved() {
    const info = model.get("saved") || {};
    savedLine.textContent = info.alias
      ? `Saved: ${info.alias} (${info.provider}, ${info.hint || "…"})`
      : "";
  }

  function showStored() {
    const stored = model.get("stored") || [];
    storedLine.textContent = stored.length
      ? "Stored: " + stored.map((c) => `${c.alias} (${c.provider} ${c.hint})`).join(", ")
      : "No credential stored yet.";
  }

  function setDisabled(value) {
    const off = value || !config;
    for (const node of [aliasInput, providerSelect, saveButton, testButton]) {
      node.disabled = off;
    }
    for (const { input } of fieldInputs) {
      input.disabled = off;
    }
  }

  function clearSecrets() {
    for (const { input } of fieldInputs) {
      input.value = "";
    }
  }

  function currentAlias() {
    const alias = aliasInput.value.trim();
    if (alias !== model.get("alias")) {
      model.set("alias", alias);
      model.save_changes();
    }
    return alias;
  }

  async function save() {
    const alias = currentAlias();
    if (!alias) {
      setStatus("error", "Give the credential an alias (letters, digits, '.', '_' or '-').");
      return;
    }
    const secret = {};
    const missing = [];
    for (const { field, input } of fieldInputs) {
      const value = input.value.trim();
      if (value) {
        secret[field.name] = value;
      } else if (field.required) {
        missing.push(field.label);
      }
    }
    if (missing.length) {
      setStatus("error", `Missing: ${missing.join(", ")}.`);
      return;
    }
    busy = true;
    setDisabled(true);
    setStatus("busy", `Saving ${alias}…`);
    const provider = model.get("provider");
    const answer = await request(
      config,
      "PUT",
      `credentials/${encodeURIComponent(alias)}`,
      { provider, secret },
    );
    busy = false;
    setDisabled(false);
    if (!answer.ok) {
      setStatus("error", `Not saved: ${why(answer)}`);
      return;
    }
    clearSecrets();
    const info = masked(answer.data);
    model.set("saved", info);
    model.save_changes();
    setStatus("ok", `Saved ${info.alias} (${info.provider}, ${info.hint || "…"}).`);
  }

  async function test() {
    const alias = currentAlias();
    if (!alias) {
      setStatus("error", "Give the alias of a stored credential to test.");
      return;
    }
    busy = true;
    setDisabled(true);
    setStatus("busy", `Testing ${alias}…`);
    const answer = await request(config, "POST", `credentials/${encodeURIComponent(alias)}/test`);
    busy = false;
    setDisabled(false);
    if (!answer.ok) {
      setStatus("error", `Test failed: ${why(answer)}`);
    } else if (answer.data && answer.data.ok) {
      setStatus("ok", `Test passed: ${answer.data.message || "the provider accepted it"}`);
    } else {
      const message = answer.data && answer.data.message ? answer.data.message : "refused";
      setStatus("error", `Test failed: ${message}`);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!busy && config) {
      save();
    }
  });
  testButton.addEventListener("click", () => {
    if (!busy && config) {
      test();
    }
  });
  aliasInput.addEventListener("change", currentAlias);
  providerSelect.addEventListener("change", () => {
    model.set("provider", providerSelect.value);
    model.save_changes();
  });

  const onProvider = () => {
    providerSelect.value = model.get("provider");
    buildFields();
  };
  const onAlias = () => {
    if (aliasInput.value.trim() !== model.get("alias")) {
      aliasInput.value = model.get("alias");
    }
  };
  const onStatus = () => {
    if (status.textContent !== model.get("status")) {
      setStatus(status.dataset.state === "busy" ? "busy" : "idle", model.get("status"), {
        share: false,
      });
    }
  };
  model.on("change:provider", onProvider);
  model.on("change:alias", onAlias);
  model.on("change:status", onStatus);
  model.on("change:saved", showSaved);
  model.on("change:stored", showStored);
  const onProviders = () => {
    buildProviderOptions();
    buildFields();
  };
  model.on("change:providers", onProviders);

  aliasInput.value = model.get("alias");
  buildProviderOptions();
  buildFields();
  showSaved();
  showStored();
  if (config) {
    setStatus("idle", model.get("status") || "", { share: false });
  } else {
    setDisabled(true);
    setStatus("unavailable", NO_SERVER);
  }

  return () => {
    clearSecrets();
    model.off("change:provider", onProvider);
    model.off("change:alias", onAlias);
    model.off("change:status", onStatus);
    model.off("change:saved", showSaved);
    model.off("change:stored", showStored);
    model.off("change:providers", onProviders);
  };
}

export default { render };
