// The portal's only script (gateway/portal/security_keys.py): runs the browser's side of a security
// key's ceremony. The page's form holds the options the server made (JSON in its data-options
// attribute, escaped as any attribute); pressing the form's button asks the browser for the key, puts its answer (JSON) in the form's
// hidden "credential" field and submits the form. Nothing is fetched; without this script the key
// pages say that a browser with JavaScript is needed.
"use strict";
(function () {
  function toBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }
  function toText(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) { return {type: d.type, id: toBytes(d.id), transports: d.transports}; });
  }
  function creation(o) {
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    o.excludeCredentials = descriptors(o.excludeCredentials);
    return {publicKey: o};
  }
  function request(o) {
    o.challenge = toBytes(o.challenge);
    o.allowCredentials = descriptors(o.allowCredentials);
    return {publicKey: o};
  }
  function answer(credential) {
    var r = credential.response, json = {
      id: credential.id, rawId: toText(credential.rawId), type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(), response: {
        clientDataJSON: toText(r.clientDataJSON)}};
    if (r.attestationObject) {
      json.response.attestationObject = toText(r.attestationObject);
      if (r.getTransports) { json.response.transports = r.getTransports(); }
    } else {
      json.response.authenticatorData = toText(r.authenticatorData);
      json.response.signature = toText(r.signature);
      if (r.userHandle) { json.response.userHandle = toText(r.userHandle); }
    }
    if (credential.authenticatorAttachment) { json.authenticatorAttachment = credential.authenticatorAttachment; }
    return JSON.stringify(json);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("key-form"), status = document.getElementById("key-status");
    if (!form) { return; }
    var nojs = document.getElementById("key-nojs");
    if (nojs) { nojs.hidden = true; }
    form.hidden = false;
    if (!window.PublicKeyCredential) {
      status.textContent = "This browser cannot use security keys: use another browser.";
      return;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var options = JSON.parse(form.getAttribute("data-options")), ask;
      status.textContent = "Use your security key now (insert it and touch it, or confirm on this device).";
      ask = form.dataset.ceremony === "create" ? navigator.credentials.create(creation(options))
                                               : navigator.credentials.get(request(options));
      ask.then(function (credential) {
        form.elements.credential.value = answer(credential);
        status.textContent = "Checking…";
        form.submit();
      }, function (error) {
        status.textContent = "The security key did not answer (" + error.name + "). Press the button to try again.";
      });
    });
  });
})();
