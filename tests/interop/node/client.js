// A ContactGate client written the way a Node.js integrator would write it with node-soap (npm
// `soap`), configured as its README says: WSSecurityCert with RSA-SHA256 / SHA-256, its own
// 10-minute Timestamp and its default reference transforms (enveloped-signature, exclusive C14N),
// and mutual TLS through the request options (an https.Agent with the client certificate).
//
// Reads a JSON job on stdin:
//   {"wsdl": URL, "wsdl_without_certificate": bool (optional), "key": PEM file, "cert": PEM file, "ca": PEM file,
//    "security": {...WSSecurityCert options over the defaults below; null drops one...}, "calls": [{"operation": NAME, "args": {...}}]}
// and prints one JSON line: {"results": [{"operation", "ok", "result" | "fault", "request"}]}.
'use strict';

const fs = require('fs');
const https = require('https');
const soap = require('soap');

function readStdin() {
  return JSON.parse(fs.readFileSync(0, 'utf8'));
}

function faultOf(error) {
  const fault = error && error.root && error.root.Envelope && error.root.Envelope.Body &&
    error.root.Envelope.Body.Fault;
  if (!fault) {
    return { transport: String(error && error.message ? error.message : error) };
  }
  const detailError = fault.detail && fault.detail.Error;
  return {
    faultcode: fault.faultcode,
    faultstring: fault.faultstring,
    code: detailError ? detailError.Code : undefined,
    message: detailError ? detailError.Message : undefined,
    status: error.response ? error.response.status : undefined,
  };
}

async function main() {
  const job = readStdin();
  const key = fs.readFileSync(job.key);
  const cert = fs.readFileSync(job.cert);
  const ca = fs.readFileSync(job.ca);
  // Mutual TLS: node-soap passes request options to axios; an https.Agent carries the client
  // certificate and the CA that signed the gateway's server certificate.
  const httpsAgent = new https.Agent({ key, cert, ca, keepAlive: false });

  // "wsdl_without_certificate": the WSDL fetched as a tool without a client certificate does (from
  // the gateway's metadata listener), trusting the CA only; the calls still go with it.
  const wsdlAgent = job.wsdl_without_certificate ? new https.Agent({ ca, keepAlive: false }) : httpsAgent;
  const client = await soap.createClientAsync(job.wsdl, { wsdl_options: { httpsAgent: wsdlAgent } });
  const options = Object.assign({
    hasTimeStamp: true,
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256',
    // wsu:Id on the signed elements (the README's "wsse-scoped reference Id"); without it
    // xml-crypto writes an unqualified Id, which the gateway refuses with a message saying so.
    signerOptions: { idMode: 'wssecurity' },
  }, job.security || {});
  for (const [name, value] of Object.entries(options)) {
    if (value === null) {
      delete options[name]; // null in the job: leave node-soap's own default
    }
  }
  client.setSecurity(new soap.WSSecurityCert(key, cert, '', options));

  const results = [];
  for (const call of job.calls) {
    try {
      const [result] = await client[call.operation + 'Async'](call.args, { httpsAgent });
      results.push({ operation: call.operation, ok: true, result, request: client.lastRequest });
    } catch (error) {
      results.push({ operation: call.operation, ok: false, fault: faultOf(error), request: client.lastRequest });
    }
  }
  process.stdout.write(JSON.stringify({ results }) + '\n');
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }) + '\n');
  process.exit(1);
});
