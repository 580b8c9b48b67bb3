// ContactGate with JAX-WS RI + WSS4J 1.6, as Debian packages them (libjaxws-java, libwss4j-java,
// libxml-security-java): the three operations through a JAX-WS Dispatch, signed and verified by a
// JAX-WS SOAPHandler with WSS4J; each answer's signature checked against the pinned
// gateway-signing.pem. (RequestDigest cannot be checked here: a handler does not see the bytes
// JAX-WS sends. Read README.md beside this file.)
//
//   javac -cp "$CLASSPATH" -d classes Client.java
//   CONTACTGATE_URL=https://gateway.example.org:8443 CONTACTGATE_CREDENTIALS=./leeds java -cp "classes:$CLASSPATH" Client
//
// CONTACTGATE_CREDENTIALS is the folder with key.pem, cert.pem, ca.pem and gateway-signing.pem;
// CONTACTGATE_FAMILY_NAME (default "Example") names the child it submits and then looks up.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import javax.xml.namespace.QName;
import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.soap.SOAPMessage;
import javax.xml.transform.Source;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.dom.DOMResult;
import javax.xml.transform.dom.DOMSource;
import javax.xml.transform.stream.StreamSource;
import javax.xml.ws.BindingProvider;
import javax.xml.ws.Dispatch;
import javax.xml.ws.Service;
import javax.xml.ws.handler.Handler;
import javax.xml.ws.handler.MessageContext;
import javax.xml.ws.handler.soap.SOAPHandler;
import javax.xml.ws.handler.soap.SOAPMessageContext;
import javax.xml.ws.soap.SOAPBinding;
import javax.xml.ws.soap.SOAPFaultException;
import org.apache.ws.security.WSConstants;
import org.apache.ws.security.WSDataRef;
import org.apache.ws.security.WSEncryptionPart;
import org.apache.ws.security.WSSecurityEngine;
import org.apache.ws.security.WSSecurityEngineResult;
import org.apache.ws.security.components.crypto.Merlin;
import org.apache.ws.security.message.WSSecHeader;
import org.apache.ws.security.message.WSSecSignature;
import org.apache.ws.security.message.WSSecTimestamp;
import org.apache.ws.security.util.WSSecurityUtil;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.Node;

public class Client {
    static final String NS = "urn:contactgate:v1";
    static final String SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/";
    static final char[] PASSWORD = "in-memory".toCharArray(); // of the in-memory key store only

    /** WSS4J 1.6 on the way out (sign) and on the way in (verify). */
    static final class WsSecurityHandler implements SOAPHandler<SOAPMessageContext> {
        private final Merlin signing = new Merlin();
        private final Merlin verifying = new Merlin();
        private final List<X509Certificate> gatewaySigning;

        WsSecurityHandler(KeyStore keys, X509Certificate ca, List<X509Certificate> gatewaySigning) throws Exception {
            this.gatewaySigning = gatewaySigning;
            signing.setKeyStore(keys);
            KeyStore trusted = KeyStore.getInstance("PKCS12");
            trusted.load(null, null);
            trusted.setCertificateEntry("gateway-ca", ca);
            verifying.setTrustStore(trusted);
        }

        @Override
        public boolean handleMessage(SOAPMessageContext context) {
            try {
                // WSS4J 1.6 cannot work on SAAJ 1.4's DOM (WRONG_DOCUMENT_ERR on Java 9+): it works on a
                // plain DOM copy of the message, and the signed copy replaces the message's content.
                SOAPMessage message = context.getMessage();
                ByteArrayOutputStream bytes = new ByteArrayOutputStream();
                message.writeTo(bytes);
                DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
                factory.setNamespaceAware(true);
                factory.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
                Document doc = factory.newDocumentBuilder().parse(new ByteArrayInputStream(bytes.toByteArray()));
                if ((Boolean) context.get(MessageContext.MESSAGE_OUTBOUND_PROPERTY)) {
                    sign(doc);
                    message.getSOAPPart().setContent(new DOMSource(doc));
                    message.saveChanges();
                } else {
                    verify(doc);
                }
                return true;
            } catch (RuntimeException e) {
                throw e;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }

        private void sign(Document doc) throws Exception {
            WSSecHeader header = new WSSecHeader();
            header.setMustUnderstand(true);
            header.insertSecurityHeader(doc);
            WSSecTimestamp timestamp = new WSSecTimestamp();
            timestamp.setTimeToLive(300);
            timestamp.build(doc, header);
            WSSecSignature signature = new WSSecSignature();
            signature.setUserInfo("client", new String(PASSWORD));
            // The three settings that differ from WSS4J's defaults:
            // 1. the certificate as a BinarySecurityToken, referenced directly (default: issuer and serial)
            signature.setKeyIdentifierType(WSConstants.BST_DIRECT_REFERENCE);
            // 2. RSA-SHA256 and SHA-256, by URI (defaults: RSA-SHA1 and SHA-1, refused)
            signature.setSignatureAlgorithm("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256");
            signature.setDigestAlgo(WSConstants.SHA256);
            // 3. the Body AND the Timestamp (default: the Body only)
            List<WSEncryptionPart> parts = new ArrayList<>();
            parts.add(new WSEncryptionPart(WSConstants.ELEM_BODY, SOAP_NS, ""));
            parts.add(new WSEncryptionPart(WSConstants.TIMESTAMP_TOKEN_LN, WSConstants.WSU_NS, ""));
            signature.setParts(parts);
            signature.build(doc, signing, header);
        }

        private void verify(Document doc) throws Exception {
            // WSS4J checks the signature, the Timestamp's freshness and that the signing certificate
            // chains to ca.pem; then: signed by a certificate of gateway-signing.pem, over exactly the
            // Envelope's one soap:Body and the Timestamp of the Security header WSS4J processed (both
            // direct children, never found anywhere in the document: a signed Body moved into a
            // header, a forged one in its place, is a wrapping attack).
            List<WSSecurityEngineResult> results = new WSSecurityEngine().processSecurityHeader(doc, null, null, verifying);
            Element body = WSSecurityUtil.findBodyElement(doc);
            Element security = WSSecurityUtil.getSecurityHeader(doc, null);
            Element timestamp = security == null ? null
                    : WSSecurityUtil.getDirectChildElement(security, WSConstants.TIMESTAMP_TOKEN_LN, WSConstants.WSU_NS);
            boolean ok = body != null && timestamp != null && doc.getElementsByTagNameNS(SOAP_NS, "Body").getLength() == 1;
            int signatures = 0;
            for (WSSecurityEngineResult result : results == null ? List.<WSSecurityEngineResult>of() : results) {
                if (!Integer.valueOf(WSConstants.SIGN).equals(result.get(WSSecurityEngineResult.TAG_ACTION))) {
                    continue;
                }
                signatures++;
                if (!gatewaySigning.contains(result.get(WSSecurityEngineResult.TAG_X509_CERTIFICATE))) {
                    throw new SecurityException("the answer is not signed with gateway-signing.pem");
                }
                @SuppressWarnings("unchecked")
                List<WSDataRef> refs = (List<WSDataRef>) result.get(WSSecurityEngineResult.TAG_DATA_REF_URIS);
                ok = ok && refs.size() == 2 && refs.stream().anyMatch(r -> r.getProtectedElement().isSameNode(body))
                        && refs.stream().anyMatch(r -> r.getProtectedElement().isSameNode(timestamp));
            }
            if (!ok || signatures != 1) {
                throw new SecurityException("the answer's signature does not cover its Body and Timestamp");
            }
        }

        @Override public boolean handleFault(SOAPMessageContext context) { return handleMessage(context); }
        @Override public void close(MessageContext context) { }
        @Override public Set<QName> getHeaders() {
            return Set.of(new QName(WSConstants.WSSE_NS, WSConstants.WSSE_LN)); // we understand wsse:Security
        }
    }

    static X509Certificate certificate(Path file) throws Exception {
        return (X509Certificate) CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(Files.readAllBytes(file)));
    }

    /** Every certificate in a PEM bundle: gateway-signing.pem holds up to three (current, next,
     *  previous), and any may sign. */
    static List<X509Certificate> certificates(Path file) throws Exception {
        List<X509Certificate> all = new ArrayList<>();
        for (java.security.cert.Certificate c : CertificateFactory.getInstance("X.509")
                .generateCertificates(new ByteArrayInputStream(Files.readAllBytes(file)))) {
            all.add((X509Certificate) c);
        }
        return all;
    }

    static PrivateKey privateKey(Path file) throws Exception { // PKCS#8 PEM ("BEGIN PRIVATE KEY"), RSA
        String pem = Files.readString(file).replaceAll("-----[^-]+-----|\\s", "");
        return KeyFactory.getInstance("RSA").generatePrivate(new PKCS8EncodedKeySpec(Base64.getDecoder().decode(pem)));
    }

    public static void main(String[] args) throws Exception {
        String url = System.getenv("CONTACTGATE_URL").replaceAll("/$", "");
        Path credentials = Path.of(System.getenv("CONTACTGATE_CREDENTIALS"));
        String family = System.getenv().getOrDefault("CONTACTGATE_FAMILY_NAME", "Example");

        X509Certificate cert = certificate(credentials.resolve("cert.pem"));
        X509Certificate ca = certificate(credentials.resolve("ca.pem"));
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        keys.setKeyEntry("client", privateKey(credentials.resolve("key.pem")), PASSWORD, new X509Certificate[] {cert});
        // Mutual TLS: the same key and certificate; trust only the gateway CA.
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, PASSWORD);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("gateway-ca", ca);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        // No WSDL needed at run time for a Dispatch: the port is added by hand.
        QName serviceName = new QName(NS, "ContactGate");
        QName portName = new QName(NS, "ContactGatePort");
        Service service = Service.create(serviceName);
        service.addPort(portName, SOAPBinding.SOAP11HTTP_BINDING, url + "/soap/v1");
        Dispatch<Source> dispatch = service.createDispatch(portName, Source.class, Service.Mode.PAYLOAD);
        Map<String, Object> request = dispatch.getRequestContext();
        request.put("com.sun.xml.ws.transport.https.client.SSLSocketFactory", tls.getSocketFactory()); // JAX-WS RI
        request.put(BindingProvider.SOAPACTION_USE_PROPERTY, true);
        @SuppressWarnings("rawtypes")
        List<Handler> chain = new ArrayList<>();
        chain.add(new WsSecurityHandler(keys, ca, certificates(credentials.resolve("gateway-signing.pem"))));
        dispatch.getBinding().setHandlerChain(chain);

        String requester = "<Requester><UserId>jaxws.example</UserId><Role>social worker</Role></Requester>"
                + "<Reason code=\"referral\">new referral from the school</Reason>";
        try {
            Element answer = call(dispatch, "SubmitUpdates", "<ChildUpdate><SourceRecordId>jaxws-" + UUID.randomUUID()
                    + "</SourceRecordId><Identity><FamilyName>" + family + "</FamilyName><GivenName>Ada</GivenName>"
                    + "<DateOfBirth>2016-05-04</DateOfBirth><Gender>female</Gender></Identity><Address><Line1>1 Example Street"
                    + "</Line1><Town>Leeds</Town><Postcode>LS1 1AA</Postcode></Address><Involvement><Service>Children's social"
                    + " care</Service><PractitionerName>Sam Worker</PractitionerName><Start>2024-01-10</Start>"
                    + "<CafAssessment>true</CafAssessment><LeadProfessional>false</LeadProfessional></Involvement></ChildUpdate>");
            System.out.println("SubmitUpdates: Outcome=" + text(answer, "Outcome") + " ChildId=" + text(answer, "ChildId")
                    + " [signature ok]");

            answer = call(dispatch, "FindChild", requester + "<FamilyName>" + family + "</FamilyName><DateOfBirth>2016-05-04</DateOfBirth>");
            List<String> ids = new ArrayList<>();
            for (int i = 0; i < answer.getElementsByTagNameNS(NS, "Candidate").getLength(); i++) {
                ids.add(text((Element) answer.getElementsByTagNameNS(NS, "Candidate").item(i), "ChildId"));
            }
            System.out.println("FindChild: ChildId=" + String.join(" ", ids) + " [signature ok]");

            answer = call(dispatch, "GetContacts", requester + "<ChildId>" + ids.get(0) + "</ChildId>");
            System.out.println("GetContacts: ChildId=" + text(answer, "ChildId") + " FamilyName=" + text(answer, "FamilyName")
                    + " Contacts=" + answer.getElementsByTagNameNS(NS, "Contact").getLength() + " [signature ok]");
        } catch (SOAPFaultException fault) { // a gateway fault: signed too, verified by the handler
            String code = fault.getFault().getDetail().getElementsByTagNameNS(NS, "Code").item(0).getTextContent();
            System.err.println("fault " + code + ": " + fault.getFault().getFaultString() + " [signature ok]");
            System.exit(1);
        }
    }

    static Element call(Dispatch<Source> dispatch, String operation, String content) throws Exception {
        dispatch.getRequestContext().put(BindingProvider.SOAPACTION_URI_PROPERTY, NS + "#" + operation);
        String payload = "<" + operation + " xmlns=\"" + NS + "\">" + content + "</" + operation + ">";
        Source answer = dispatch.invoke(new StreamSource(new StringReader(payload)));
        DOMResult dom = new DOMResult();
        TransformerFactory.newInstance().newTransformer().transform(answer, dom);
        return ((Document) dom.getNode()).getDocumentElement();
    }

    static String text(Element element, String name) {
        return element.getElementsByTagNameNS(NS, name).item(0).getTextContent();
    }
}
