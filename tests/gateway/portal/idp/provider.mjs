// A real OpenID provider (panva's oidc-provider, OpenID Certified) for the portal's federated
// sign-in tests, configured from a JSON file the test writes:
//   node provider.mjs CONFIG.json
//   { "port": 12345, "jwks": {"keys": [<private RSA JWK>]}, "clients": [<client metadata>],
//     "accounts": {"<id>": {<claims>}}, "cookie_key": "..." }
// Its login and consent pages are the tests' own: whoever the test names next (POST /test/next-login
// {"accountId", "acr", "amr"}) is signed in at once, with that acr and amr. Everything else (the
// authorisation, token, discovery, JWKS, end-session endpoints, PKCE, private_key_jwt, ID tokens) is
// the library's. Prints "listening" once it serves.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
let next = { accountId: null, acr: undefined, amr: undefined };

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: [config.cookie_key] },
  claims: { openid: ['sub', 'acr', 'amr'], profile: ['name', 'preferred_username', 'groups'] },
  conformIdTokenClaims: false, // the role and name claims in the ID token itself
  acrValues: ['urn:contactgate:test:mfa', 'urn:contactgate:test:pwd'],
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, id) => {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  renderError: async (ctx, out) => { ctx.type = 'text/plain'; ctx.body = `error: ${out.error}: ${out.error_description || ''}`; },
});

provider.use(async (ctx, nextMiddleware) => {
  if (ctx.method === 'POST' && ctx.path === '/test/next-login') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    next = JSON.parse(body);
    ctx.body = 'ok';
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params } = details;
    let result;
    if (prompt.name === 'login') {
      if (!next.accountId) { ctx.status = 400; ctx.body = 'no login named: POST /test/next-login first'; return; }
      result = { login: { accountId: next.accountId, acr: next.acr, amr: next.amr } };
    } else {
      const grant = details.grantId ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      result = { consent: { grantId: await grant.save() } };
    }
    const redirectTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
    ctx.redirect(redirectTo);
    return;
  }
  await nextMiddleware();
});

provider.listen(config.port, '127.0.0.1', () => { console.log('listening'); });
