// Passkeys (WebAuthn), as progressive enhancement. Every form marked
// data-passkey="create" or "get" is a passkey ceremony: this script asks the
// server for the options (data-passkey-options, a POST with the form's CSRF
// token), lets the browser run the ceremony with its own JSON helpers
// (PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON,
// credential.toJSON()), puts the result in the form's "credential" field and
// submits the form. Without JavaScript the button stays hidden and the page
// says that passkeys need it; without WebAuthn, the page says so.
(function () {
  'use strict';

  var PKC = window.PublicKeyCredential;
  var supported = !!(PKC && typeof PKC.parseCreationOptionsFromJSON === 'function' && typeof PKC.parseRequestOptionsFromJSON === 'function' && navigator.credentials);

  function show(el, on) {
    if (el) el.hidden = !on;
  }

  function fieldsOf(form) {
    var body = new URLSearchParams();
    var csrf = form.querySelector('input[name="_csrf"]');
    if (csrf) body.append('_csrf', csrf.value);
    return body;
  }

  function ceremony(form) {
    var kind = form.getAttribute('data-passkey');
    var button = form.querySelector('button[type="submit"]');
    var error = form.querySelector('[data-passkey-error]');
    show(error, false);
    if (button) button.disabled = true;
    return fetch(form.getAttribute('data-passkey-options'), {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: fieldsOf(form).toString(),
    })
      .then(function (res) {
        return res.json().then(function (data) {
          if (data && data.redirect) {
            window.location.assign(data.redirect);
            return null;
          }
          if (!res.ok || !data || !data.options) throw new Error('options');
          if (kind === 'create') return navigator.credentials.create({ publicKey: PKC.parseCreationOptionsFromJSON(data.options) });
          return navigator.credentials.get({ publicKey: PKC.parseRequestOptionsFromJSON(data.options) });
        });
      })
      .then(function (credential) {
        if (!credential) return;
        form.querySelector('input[name="credential"]').value = JSON.stringify(credential.toJSON());
        form.setAttribute('data-passkey-done', '');
        form.submit();
      })
      .catch(function () {
        // Cancelled, timed out, or refused by the authenticator: say so, and let the person try again.
        show(error, true);
        if (button) {
          button.disabled = false;
          button.focus();
        }
      });
  }

  function setUp(form) {
    if (!supported) {
      show(form.querySelector('[data-passkey-unsupported]'), true);
      return;
    }
    show(form.querySelector('[data-passkey-controls]'), true);
    form.addEventListener('submit', function (event) {
      if (form.hasAttribute('data-passkey-done')) return;
      event.preventDefault();
      ceremony(form);
    });
  }

  function start() {
    var forms = document.querySelectorAll('form[data-passkey]');
    for (var i = 0; i < forms.length; i++) {
      if (forms[i].hasAttribute('data-passkey-ready')) continue;
      forms[i].setAttribute('data-passkey-ready', '');
      setUp(forms[i]);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
