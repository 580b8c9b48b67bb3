// The verified client certificate as RFC 9440 wants it in the Client-Cert header: a structured-field
// byte sequence, ":" + base64 of the DER + ":". nginx has the certificate only as PEM
// ($ssl_client_raw_cert), whose body is that base64: take away the armour and the line breaks.
function rfc9440(r) {
    var pem = r.variables.ssl_client_raw_cert;
    if (!pem) {
        return '';
    }
    return ':' + pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '') + ':';
}

export default { rfc9440 };
