#!/bin/sh
# ContactGate with curl, xmlsec1 and xmllint: the three operations, each request signed by xmlsec1
# from a template, each answer's signature checked against the pinned gateway-signing.pem and its
# RequestDigest against the bytes sent.
#
#   apt-get install curl xmlsec1 libxml2-utils openssl      # Debian/Ubuntu
#   CONTACTGATE_URL=https://gateway.example.org:8443 CONTACTGATE_CREDENTIALS=./leeds sh client.sh
#
# CONTACTGATE_CREDENTIALS is the folder with key.pem, cert.pem, ca.pem and gateway-signing.pem;
# CONTACTGATE_FAMILY_NAME (default "Example") names the child it submits and then looks up.
# GNU date (for "+5 minutes"); read README.md beside this file for the choices made here.
set -eu

URL="${CONTACTGATE_URL:?set CONTACTGATE_URL, e.g. https://gateway.example.org:8443}"
CREDS="${CONTACTGATE_CREDENTIALS:?set CONTACTGATE_CREDENTIALS to the folder with key.pem, cert.pem, ca.pem, gateway-signing.pem}"
FAMILY="${CONTACTGATE_FAMILY_NAME:-Example}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

SOAP_NS=http://schemas.xmlsoap.org/soap/envelope/
WSU_NS=http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd
# Every path into an answer starts at its Envelope: what the signature covers is the Envelope's own
# soap:Body and its Security header's wsu:Timestamp, never an element of that name elsewhere.
ENV="/*[local-name()='Envelope' and namespace-uri()='$SOAP_NS']"
BODY="$ENV/*[local-name()='Body' and namespace-uri()='$SOAP_NS']"
SECURITY="$ENV/*[local-name()='Header' and namespace-uri()='$SOAP_NS']/*[local-name()='Security' and namespace-uri()='http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd']"
TIMESTAMP="$SECURITY/*[local-name()='Timestamp' and namespace-uri()='$WSU_NS']"
# Trust for TLS: ca.pem only. With --cacert alone curl still reads its CApath (/etc/ssl/certs on
# Debian): an empty one replaces it.
mkdir "$WORK/no-ca"
# gateway-signing.pem holds up to three certificates (current, next, previous): any may sign.
awk -v dir="$WORK" '/-----BEGIN CERTIFICATE-----/ { n++ } n { print > (dir "/gateway-signing-" n ".pem") }' "$CREDS/gateway-signing.pem"
# xmlsec1 finds an Id attribute by its local name on the named element: wsu:Id on these two.
IDS="--id-attr:Id ${SOAP_NS}:Body --id-attr:Id http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd:Timestamp"

# call OPERATION BODY-CONTENT: sign, send, verify; leaves the answer in $WORK/OPERATION.answer.xml
call() {
    op=$1
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    expires=$(date -u -d '+5 minutes' +%Y-%m-%dT%H:%M:%SZ)
    # The template: a Timestamp, and a Signature over the Body and the Timestamp (each by wsu:Id,
    # exclusive C14N, SHA-256, RSA-SHA256) whose empty values xmlsec1 fills in, with the signing
    # certificate in ds:X509Data.
    cat > "$WORK/$op.template.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:cg="urn:contactgate:v1"><soap:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd" soap:mustUnderstand="1"><wsu:Timestamp wsu:Id="TS-1"><wsu:Created>$created</wsu:Created><wsu:Expires>$expires</wsu:Expires></wsu:Timestamp><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#Body-1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference><ds:Reference URI="#TS-1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature></wsse:Security></soap:Header><soap:Body xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd" wsu:Id="Body-1">$2</soap:Body></soap:Envelope>
XML
    # shellcheck disable=SC2086
    xmlsec1 --sign $IDS --privkey-pem "$CREDS/key.pem,$CREDS/cert.pem" \
        --output "$WORK/$op.request.xml" "$WORK/$op.template.xml"
    status=$(curl --silent --show-error --output "$WORK/$op.answer.xml" --write-out '%{http_code}' \
        --cert "$CREDS/cert.pem" --key "$CREDS/key.pem" --cacert "$CREDS/ca.pem" --capath "$WORK/no-ca" \
        -H 'Content-Type: text/xml; charset=utf-8' -H "SOAPAction: \"urn:contactgate:v1#$op\"" \
        --data-binary "@$WORK/$op.request.xml" "$URL/soap/v1")
    answer="$WORK/$op.answer.xml"
    # The answer (a fault too) is signed with the gateway's key: verify with a pinned certificate
    # only. --enabled-key-data key-name: xmlsec1 reads no key from the answer's KeyInfo (else it would
    # trust a certificate in its ds:X509Data that chains to the system's CAs); exactly one Signature,
    # one soap:Body in the whole answer.
    if [ "$(xpath "$answer" "count(//*[local-name()='Signature'])")" != 1 ] \
        || [ "$(xpath "$answer" "count(//*[local-name()='Body' and namespace-uri()='$SOAP_NS'])")" != 1 ]; then
        echo "$op: the answer's signature does not cover its Body and Timestamp" >&2; exit 1
    fi
    verified=
    for pinned in "$WORK"/gateway-signing-*.pem; do
        # shellcheck disable=SC2086
        if xmlsec1 --verify $IDS --enabled-key-data key-name --pubkey-cert-pem "$pinned" "$answer" 2>>"$WORK/verify.log"; then
            verified=1; break
        fi
    done
    if [ -z "$verified" ]; then
        cat "$WORK/verify.log" >&2; echo "$op: the answer's signature does not verify with gateway-signing.pem" >&2; exit 1
    fi
    # ... check that what it signs is exactly its soap:Body and wsu:Timestamp, ...
    signed=$(xpath "$answer" "$SECURITY/*[local-name()='Signature']/*[local-name()='SignedInfo']/*[local-name()='Reference']/@URI" | tr '\n' ' ')
    body_id=$(xpath "$answer" "string($BODY/@*[local-name()='Id' and namespace-uri()='$WSU_NS'])")
    ts_id=$(xpath "$answer" "string($TIMESTAMP/@*[local-name()='Id' and namespace-uri()='$WSU_NS'])")
    if [ -z "$body_id" ] || [ -z "$ts_id" ] || { [ "$signed" != "#$body_id #$ts_id " ] && [ "$signed" != "#$ts_id #$body_id " ]; }; then
        echo "$op: the answer's signature does not cover its Body and Timestamp" >&2; exit 1
    fi
    # ... that its Timestamp is current (a minute's clock skew), ...
    now=$(date -u +%s)
    created=$(date -u -d "$(xpath "$answer" "string($TIMESTAMP/*[local-name()='Created'])")" +%s) || exit 1
    expires=$(date -u -d "$(xpath "$answer" "string($TIMESTAMP/*[local-name()='Expires'])")" +%s) || exit 1
    if [ "$((created - 60))" -gt "$now" ] || [ "$now" -ge "$expires" ]; then
        echo "$op: the answer's Timestamp has expired (or is in the future)" >&2; exit 1
    fi
    if [ "$status" != 200 ]; then
        echo "$op: fault $(xpath "$answer" "string($BODY//*[local-name()='Error']/*[local-name()='Code'])"):" \
             "$(xpath "$answer" "string($BODY/*[local-name()='Fault']/faultstring)") [signature ok]" >&2
        exit 1
    fi
    # ... and that RequestDigest is base64(SHA-256(the request's bytes as sent)).
    sent=$(openssl dgst -sha256 -binary "$WORK/$op.request.xml" | base64)
    if [ "$(field "$answer" RequestDigest)" != "$sent" ]; then
        echo "$op: RequestDigest is not the SHA-256 of the request sent" >&2; exit 1
    fi
}

xpath() { xmllint --xpath "$2" "$1" | sed -e 's/^ *[a-zA-Z0-9_:]*="\(.*\)"$/\1/'; }  # an attribute: its value
field() { xpath "$1" "string(($BODY//*[local-name()='$2' and namespace-uri()='urn:contactgate:v1'])[1])"; }  # in the signed Body only

REQUESTER='<cg:Requester><cg:UserId>curl.example</cg:UserId><cg:Role>social worker</cg:Role></cg:Requester><cg:Reason code="referral">new referral from the school</cg:Reason>'

call SubmitUpdates "<cg:SubmitUpdates><cg:ChildUpdate><cg:SourceRecordId>curl-$(date +%s)-$$</cg:SourceRecordId><cg:Identity><cg:FamilyName>$FAMILY</cg:FamilyName><cg:GivenName>Ada</cg:GivenName><cg:DateOfBirth>2016-05-04</cg:DateOfBirth><cg:Gender>female</cg:Gender></cg:Identity><cg:Address><cg:Line1>1 Example Street</cg:Line1><cg:Town>Leeds</cg:Town><cg:Postcode>LS1 1AA</cg:Postcode></cg:Address><cg:Involvement><cg:Service>Children's social care</cg:Service><cg:PractitionerName>Sam Worker</cg:PractitionerName><cg:Start>2024-01-10</cg:Start><cg:CafAssessment>true</cg:CafAssessment><cg:LeadProfessional>false</cg:LeadProfessional></cg:Involvement></cg:ChildUpdate></cg:SubmitUpdates>"
echo "SubmitUpdates: Outcome=$(field "$WORK/SubmitUpdates.answer.xml" Outcome) ChildId=$(field "$WORK/SubmitUpdates.answer.xml" ChildId) [signature ok, RequestDigest ok]"

call FindChild "<cg:FindChild>$REQUESTER<cg:FamilyName>$FAMILY</cg:FamilyName><cg:DateOfBirth>2016-05-04</cg:DateOfBirth></cg:FindChild>"
found=$(xpath "$WORK/FindChild.answer.xml" "$BODY//*[local-name()='Candidate']/*[local-name()='ChildId']/text()" | tr '\n' ' ' | sed 's/ $//')
echo "FindChild: ChildId=$found [signature ok, RequestDigest ok]"

call GetContacts "<cg:GetContacts>$REQUESTER<cg:ChildId>${found%% *}</cg:ChildId></cg:GetContacts>"
echo "GetContacts: ChildId=$(field "$WORK/GetContacts.answer.xml" ChildId) FamilyName=$(field "$WORK/GetContacts.answer.xml" FamilyName)" \
     "Contacts=$(xpath "$WORK/GetContacts.answer.xml" "count($BODY//*[local-name()='Contact'])") [signature ok, RequestDigest ok]"
