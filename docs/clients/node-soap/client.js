// ContactGate with node-soap (npm `soap`): the three operations, each answer's signature checked
// against the pinned gateway-signing.pem with xml-crypto (node-soap checks nothing itself) and its
// RequestDigest against the bytes sent.
//
//   npm ci     # soap, xml-crypto, @xmldom/xmldom as pinned in package-lock.json
//   CONTACTGATE_URL=https://gateway.example.org:8443 CONTACTGATE_CREDENTIALS=./leeds node client.js
//
// CONTACTGATE_CREDENTIALS is the folder with key.pem, cert.pem, ca.pem and gateway-signing.pem;
// CONTACTGATE_FAMILY_NAME (default "Example") names the child it submits and then looks up.
// Read README.md beside this file for what differs from node-soap's defaults.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const path = require('path');
const soap = require('soap');
const { SignedXml } = require('xml-crypto');
const { DOMParser } = require('@xmldom/xmldom');

const SOAP_NS = 'http://schemas.xmlsoap.org/soap/envelope/';
const WSU = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd';
const DS = 'http://www.w3.org/2000/09/xmldsig#';

const WSSE = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd';

// The element children of `parent` named {ns}name.
function children(parent, ns, name) {
  return Array.from(parent ? parent.childNodes : []).filter((node) => node.nodeType === 1
    && node.namespaceURI === ns && node.localName === name);
}

// The answer must be signed by a certificate of the pinned gateway-signing.pem (it holds up to three:
// current, next, previous), over exactly its soap:Body (the one in the document, a child of the
// Envelope) and the wsu:Timestamp of its Security header, which must be current; and it must carry
// RequestDigest = base64(SHA-256(the request's bytes as sent)).
function verifyAnswer(client, answer, gatewayCerts) {
  const xml = client.lastResponse;
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const envelope = doc.documentElement;
  const [header] = children(envelope, SOAP_NS, 'Header');
  const [security] = children(header, WSSE, 'Security');
  const signatures = children(security, DS, 'Signature');
  const timestamps = children(security, WSU, 'Timestamp');
  const bodies = children(envelope, SOAP_NS, 'Body');
  if (signatures.length !== 1 || doc.getElementsByTagNameNS(DS, 'Signature').length !== 1) {
    throw new Error('the answer is not signed');
  }
  if (bodies.length !== 1 || doc.getElementsByTagNameNS(SOAP_NS, 'Body').length !== 1 || timestamps.length !== 1
      || !bodies[0].getAttributeNS(WSU, 'Id') || !timestamps[0].getAttributeNS(WSU, 'Id')) {
    throw new Error('the answer\'s signature does not cover its Body and Timestamp');
  }
  const verifier = gatewayCerts.map((publicCert) => {
    const candidate = new SignedXml({ publicCert, idMode: 'wssecurity' });
    candidate.loadSignature(signatures[0]);
    try {
      return candidate.checkSignature(xml) ? candidate : null;
    } catch (error) {
      return null;
    }
  }).find((candidate) => candidate);
  if (!verifier) {
    throw new Error('the answer\'s signature does not verify with gateway-signing.pem');
  }
  const signed = verifier.getReferences().map((reference) => reference.uri).sort();
  const expected = ['#' + bodies[0].getAttributeNS(WSU, 'Id'), '#' + timestamps[0].getAttributeNS(WSU, 'Id')].sort();
  if (JSON.stringify(signed) !== JSON.stringify(expected)) {
    throw new Error('the answer\'s signature does not cover its Body and Timestamp');
  }
  const time = (name) => Date.parse((children(timestamps[0], WSU, name)[0] || {}).textContent);
  const now = Date.now();
  if (!(time('Created') - 60000 <= now && now < time('Expires'))) { // a minute's clock skew
    throw new Error('the answer\'s Timestamp has expired (or is in the future)');
  }
  const digest = crypto.createHash('sha256').update(client.lastRequest, 'utf8').digest('base64');
  if (answer.RequestDigest !== digest) {
    throw new Error(`RequestDigest ${answer.RequestDigest} is not the SHA-256 of the request sent (${digest})`);
  }
  return answer;
}

async function main() {
  const url = process.env.CONTACTGATE_URL.replace(/\/$/, '');
  const credentials = process.env.CONTACTGATE_CREDENTIALS;
  const family = process.env.CONTACTGATE_FAMILY_NAME || 'Example';
  const read = (name) => fs.readFileSync(path.join(credentials, name));
  const key = read('key.pem');
  const cert = read('cert.pem');
  // Every certificate in the bundle: after a key switch the gateway signs with the second.
  const gatewayCerts = read('gateway-signing.pem').toString()
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) || [];

  // Mutual TLS: node-soap hands request options to axios; an https.Agent carries the client
  // certificate and trusts only the gateway CA. Needed for the WSDL and for every call.
  const httpsAgent = new https.Agent({ key, cert, ca: read('ca.pem') });
  const client = await soap.createClientAsync(`${url}/soap/v1?wsdl`, { wsdl_options: { httpsAgent } });
  client.setSecurity(new soap.WSSecurityCert(key, cert, '', {
    hasTimeStamp: true, // node-soap's Timestamp lasts 10 minutes: accepted (the gateway caps it at 5)
    signatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256', // default RSA-SHA1: refused
    digestAlgorithm: 'http://www.w3.org/2001/04/xmlenc#sha256', // default SHA-1: refused
    signerOptions: { idMode: 'wssecurity' }, // default: an unqualified Id, refused ("must carry wsu:Id")
  }));
  const call = async (operation, args) => {
    const [answer] = await client[`${operation}Async`](args, { httpsAgent });
    return verifyAnswer(client, answer, gatewayCerts);
  };

  const requester = { UserId: 'node.example', Role: 'social worker' };
  const reason = { attributes: { code: 'referral' }, $value: 'new referral from the school' };

  const submitted = await call('SubmitUpdates', { ChildUpdate: [{
    SourceRecordId: `node-${crypto.randomUUID()}`,
    Identity: { FamilyName: family, GivenName: ['Ada'], DateOfBirth: '2016-05-04', Gender: 'female' },
    Address: { Line1: '1 Example Street', Town: 'Leeds', Postcode: 'LS1 1AA' },
    Involvement: [{ Service: "Children's social care", PractitionerName: 'Sam Worker', Start: '2024-01-10',
      CafAssessment: true, LeadProfessional: false }],
  }] });
  const [result] = [].concat(submitted.Result);
  console.log(`SubmitUpdates: Outcome=${result.Outcome} ChildId=${result.ChildId} [signature ok, RequestDigest ok]`);

  const found = await call('FindChild', { Requester: requester, Reason: reason, FamilyName: family,
    DateOfBirth: '2016-05-04' });
  const candidates = [].concat(found.Candidate || []);
  console.log(`FindChild: ChildId=${candidates.map((c) => c.ChildId).join(' ')} [signature ok, RequestDigest ok]`);

  const contacts = await call('GetContacts', { Requester: requester, Reason: reason, ChildId: candidates[0].ChildId });
  const child = contacts.Child;
  console.log(`GetContacts: ChildId=${child.ChildId} FamilyName=${child.Identity.FamilyName}` +
    ` Contacts=${[].concat(child.Contact || []).length} [signature ok, RequestDigest ok]`);
}

main().catch((error) => {
  // A gateway fault: node-soap rejects with the parsed soap:Fault in error.root.
  const fault = error && error.root && error.root.Envelope && error.root.Envelope.Body.Fault;
  console.error(fault ? `fault ${fault.detail.Error.Code}: ${fault.faultstring}` : (error.stack || error));
  process.exit(1);
});
