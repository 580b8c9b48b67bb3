<?php
// ContactGate with PHP's SoapClient: the three operations, each request signed by hand with DOM's
// exclusive C14N and openssl (no xmlseclibs needed), each answer's signature checked against the
// pinned gateway-signing.pem and its RequestDigest against the bytes sent.
//
//   apt-get install php-cli php-soap php-xml           # PHP 8.1+: soap, dom and openssl
//   CONTACTGATE_URL=https://gateway.example.org:8443 CONTACTGATE_CREDENTIALS=./leeds php client.php
//
// CONTACTGATE_CREDENTIALS is the folder with key.pem, cert.pem, ca.pem and gateway-signing.pem;
// CONTACTGATE_FAMILY_NAME (default "Example") names the child it submits and then looks up.
// Read README.md beside this file for the choices made here.
declare(strict_types=1);

const SOAP_NS = 'http://schemas.xmlsoap.org/soap/envelope/';
const WSSE = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd';
const WSU = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd';
const DS = 'http://www.w3.org/2000/09/xmldsig#';
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#';
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
const SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256';

final class ContactGateClient extends SoapClient
{
    private string $sent = '';

    public function __construct(string $url, private string $credentials)
    {
        // Mutual TLS for the WSDL and every call: the organisation's certificate, trust only ca.pem.
        $context = stream_context_create(['ssl' => [
            'local_cert' => "$credentials/cert.pem", 'local_pk' => "$credentials/key.pem",
            'cafile' => "$credentials/ca.pem", 'verify_peer' => true, 'verify_peer_name' => true,
        ]]);
        parent::__construct("$url/soap/v1?wsdl", [
            'stream_context' => $context, 'cache_wsdl' => WSDL_CACHE_NONE,
            'exceptions' => true, 'trace' => true, 'features' => SOAP_SINGLE_ELEMENT_ARRAYS,
        ]);
    }

    public function __doRequest($request, $location, $action, $version, $oneWay = false): ?string
    {
        $this->sent = $this->sign($request);
        $answer = parent::__doRequest($this->sent, $location, $action, $version, $oneWay);
        $this->verify($answer);  // before SoapClient reads it: a fault is signed too
        return $answer;
    }

    /** RequestDigest = base64(SHA-256(the request's bytes as sent)). */
    public function checkDigest(object $answer): object
    {
        // SoapClient decodes xs:base64Binary: compare the raw digest.
        if ($answer->RequestDigest !== hash('sha256', $this->sent, true)) {
            throw new RuntimeException('RequestDigest is not the SHA-256 of the request sent');
        }
        return $answer;
    }

    /** wsse:Security with a 5-minute Timestamp, the certificate as a BinarySecurityToken, and an
     *  RSA-SHA256 signature over soap:Body and the Timestamp (each by wsu:Id, exclusive C14N, SHA-256). */
    private function sign(string $request): string
    {
        $doc = new DOMDocument();
        $doc->loadXML($request);
        $envelope = $doc->documentElement;
        $body = $doc->getElementsByTagNameNS(SOAP_NS, 'Body')->item(0);
        $header = $doc->getElementsByTagNameNS(SOAP_NS, 'Header')->item(0)
            ?? $envelope->insertBefore($doc->createElementNS(SOAP_NS, $envelope->prefix . ':Header'), $body);
        $security = $header->appendChild($doc->createElementNS(WSSE, 'wsse:Security'));
        $security->setAttributeNS(SOAP_NS, $envelope->prefix . ':mustUnderstand', '1');

        $pem = file_get_contents("$this->credentials/cert.pem");
        $token = $security->appendChild($doc->createElementNS(WSSE, 'wsse:BinarySecurityToken',
            preg_replace('/-----[^-]+-----|\s+/', '', $pem)));
        $token->setAttribute('EncodingType', 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary');
        $token->setAttribute('ValueType', 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3');
        $token->setAttributeNS(WSU, 'wsu:Id', 'X509-1');

        $now = time();
        $timestamp = $security->appendChild($doc->createElementNS(WSU, 'wsu:Timestamp'));
        $timestamp->setAttributeNS(WSU, 'wsu:Id', 'TS-1');
        $timestamp->appendChild($doc->createElementNS(WSU, 'wsu:Created', gmdate('Y-m-d\TH:i:s\Z', $now)));
        $timestamp->appendChild($doc->createElementNS(WSU, 'wsu:Expires', gmdate('Y-m-d\TH:i:s\Z', $now + 300)));
        $body->setAttributeNS(WSU, 'wsu:Id', 'Body-1');

        $signature = $security->appendChild($doc->createElementNS(DS, 'ds:Signature'));
        $signedInfo = $signature->appendChild($doc->createElementNS(DS, 'ds:SignedInfo'));
        $signedInfo->appendChild($doc->createElementNS(DS, 'ds:CanonicalizationMethod'))->setAttribute('Algorithm', EXC_C14N);
        $signedInfo->appendChild($doc->createElementNS(DS, 'ds:SignatureMethod'))->setAttribute('Algorithm', RSA_SHA256);
        foreach (['Body-1' => $body, 'TS-1' => $timestamp] as $id => $node) {
            $reference = $signedInfo->appendChild($doc->createElementNS(DS, 'ds:Reference'));
            $reference->setAttribute('URI', "#$id");
            $transforms = $reference->appendChild($doc->createElementNS(DS, 'ds:Transforms'));
            $transforms->appendChild($doc->createElementNS(DS, 'ds:Transform'))->setAttribute('Algorithm', EXC_C14N);
            $reference->appendChild($doc->createElementNS(DS, 'ds:DigestMethod'))->setAttribute('Algorithm', SHA256);
            $reference->appendChild($doc->createElementNS(DS, 'ds:DigestValue',
                base64_encode(hash('sha256', $node->C14N(true, false), true))));
        }
        $key = openssl_pkey_get_private(file_get_contents("$this->credentials/key.pem"));
        openssl_sign($signedInfo->C14N(true, false), $value, $key, OPENSSL_ALGO_SHA256);
        $signature->appendChild($doc->createElementNS(DS, 'ds:SignatureValue', base64_encode($value)));
        $keyInfo = $signature->appendChild($doc->createElementNS(DS, 'ds:KeyInfo'));
        $reference = $keyInfo->appendChild($doc->createElementNS(WSSE, 'wsse:SecurityTokenReference'))
            ->appendChild($doc->createElementNS(WSSE, 'wsse:Reference'));
        $reference->setAttribute('URI', '#X509-1');
        $reference->setAttribute('ValueType', 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3');
        return $doc->saveXML();
    }

    /** The answer is signed with a certificate of the pinned gateway-signing.pem (not the one it
     *  carries), over exactly its soap:Body and wsu:Timestamp, each digest and the SignatureValue
     *  checked, and its Timestamp is current. */
    private function verify(?string $answer): void
    {
        $doc = new DOMDocument();
        if ($answer === null || !$doc->loadXML($answer, LIBXML_NONET)) {
            throw new RuntimeException('no answer, or not XML');
        }
        $xpath = new DOMXPath($doc);
        foreach (['s' => SOAP_NS, 'wsse' => WSSE, 'wsu' => WSU, 'ds' => DS] as $prefix => $ns) {
            $xpath->registerNamespace($prefix, $ns);
        }
        $signedInfo = $xpath->query('/s:Envelope/s:Header/wsse:Security/ds:Signature/ds:SignedInfo');
        if ($signedInfo->length !== 1) {
            throw new RuntimeException('the answer is not signed');
        }
        $signedInfo = $signedInfo->item(0);
        $parts = ['body' => '/s:Envelope/s:Body', 'timestamp' => '/s:Envelope/s:Header/wsse:Security/wsu:Timestamp'];
        $covered = [];
        foreach ($xpath->query('ds:Reference', $signedInfo) as $reference) {
            $id = substr($reference->getAttribute('URI'), 1);
            $nodes = preg_match('/^[A-Za-z_][\w.-]*$/', $id) ? $xpath->query("//*[@wsu:Id='$id']") : new DOMNodeList();
            $name = array_search(true, array_map(fn ($path) => $nodes->length === 1
                && $nodes->item(0)->isSameNode($xpath->query($path)->item(0)), $parts), true);
            if ($name === false || isset($covered[$name])
                || $xpath->evaluate('string(ds:DigestMethod/@Algorithm)', $reference) !== SHA256
                || $xpath->evaluate('string(ds:Transforms/ds:Transform[last()]/@Algorithm)', $reference) !== EXC_C14N
                || base64_decode($xpath->evaluate('string(ds:DigestValue)', $reference))
                    !== hash('sha256', $nodes->item(0)->C14N(true, false), true)) {
                throw new RuntimeException('the answer\'s signature does not cover its Body and Timestamp');
            }
            $covered[$name] = true;
        }
        if (count($covered) !== 2
            || $xpath->evaluate('string(ds:SignatureMethod/@Algorithm)', $signedInfo) !== RSA_SHA256
            || $xpath->evaluate('string(ds:CanonicalizationMethod/@Algorithm)', $signedInfo) !== EXC_C14N) {
            throw new RuntimeException('the answer\'s signature does not cover its Body and Timestamp');
        }
        $created = strtotime($xpath->evaluate('string(/s:Envelope/s:Header/wsse:Security/wsu:Timestamp/wsu:Created)'));
        $expires = strtotime($xpath->evaluate('string(/s:Envelope/s:Header/wsse:Security/wsu:Timestamp/wsu:Expires)'));
        if ($created === false || $expires === false || $created - 60 > time() || time() >= $expires) {  // a minute's skew
            throw new RuntimeException('the answer\'s Timestamp has expired (or is in the future)');
        }
        // gateway-signing.pem holds up to three certificates (current, next, previous): any may sign.
        $value = base64_decode($xpath->evaluate('string(../ds:SignatureValue)', $signedInfo));
        preg_match_all('/-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----/s',
            file_get_contents("$this->credentials/gateway-signing.pem"), $pems);
        foreach ($pems[0] as $pem) {
            if (openssl_verify($signedInfo->C14N(true, false), $value, openssl_pkey_get_public($pem), OPENSSL_ALGO_SHA256) === 1) {
                return;
            }
        }
        throw new RuntimeException('the answer\'s signature does not verify with gateway-signing.pem');
    }
}

$url = rtrim(getenv('CONTACTGATE_URL') ?: exit("set CONTACTGATE_URL\n"), '/');
$credentials = getenv('CONTACTGATE_CREDENTIALS') ?: exit("set CONTACTGATE_CREDENTIALS\n");
$family = getenv('CONTACTGATE_FAMILY_NAME') ?: 'Example';
$client = new ContactGateClient($url, $credentials);
$requester = ['UserId' => 'php.example', 'Role' => 'social worker'];
$reason = ['_' => 'new referral from the school', 'code' => 'referral'];

try {
    $answer = $client->checkDigest($client->SubmitUpdates(['ChildUpdate' => [[
        'SourceRecordId' => 'php-' . bin2hex(random_bytes(8)),
        'Identity' => ['FamilyName' => $family, 'GivenName' => ['Ada'], 'DateOfBirth' => '2016-05-04', 'Gender' => 'female'],
        'Address' => ['Line1' => '1 Example Street', 'Town' => 'Leeds', 'Postcode' => 'LS1 1AA'],
        'Involvement' => [['Service' => "Children's social care", 'PractitionerName' => 'Sam Worker',
            'Start' => '2024-01-10', 'CafAssessment' => true, 'LeadProfessional' => false]],
    ]]]));
    $result = $answer->Result[0];
    echo "SubmitUpdates: Outcome=$result->Outcome ChildId=$result->ChildId [signature ok, RequestDigest ok]\n";

    $answer = $client->checkDigest($client->FindChild(['Requester' => $requester, 'Reason' => $reason,
        'FamilyName' => $family, 'DateOfBirth' => '2016-05-04']));
    $ids = array_map(fn ($candidate) => $candidate->ChildId, $answer->Candidate ?? []);
    echo 'FindChild: ChildId=' . implode(' ', $ids) . " [signature ok, RequestDigest ok]\n";

    $answer = $client->checkDigest($client->GetContacts(['Requester' => $requester, 'Reason' => $reason,
        'ChildId' => $ids[0]]));
    $child = $answer->Child;
    echo "GetContacts: ChildId=$child->ChildId FamilyName={$child->Identity->FamilyName} Contacts="
        . count($child->Contact ?? []) . " [signature ok, RequestDigest ok]\n";
} catch (SoapFault $fault) {
    fwrite(STDERR, "fault {$fault->detail->Error->Code}: {$fault->getMessage()} [signature ok]\n");
    exit(1);
}
