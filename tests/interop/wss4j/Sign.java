// Signs SOAP 1.1 requests with WSS4J 1.6 (WSSecSignature), as the distributions package it
// (Debian's libwss4j-java with Santuario), for tests/interop/test_wss4j.py. One run signs every job:
//     javac -cp JARS -d CLASSES Sign.java; java -cp CLASSES:JARS Sign KEYSTORE.p12 PASSWORD ALIAS JOB...
// (JARS: wss4j.jar, xmlsec.jar, commons-logging.jar, slf4j-api.jar from /usr/share/java)
// JOB = IN.xml,OUT.xml,KEY_IDENTIFIER,SIGNATURE_ALGORITHM,DIGEST_ALGORITHM,TIMESTAMP
//   KEY_IDENTIFIER: IssuerSerial (WSS4J's default), SKIKeyIdentifier, Thumbprint or DirectReference
//   SIGNATURE_ALGORITHM, DIGEST_ALGORITHM: a URI, or "default" (WSS4J 1.6: RSA-SHA1 and SHA-1)
//   TIMESTAMP: "yes" (a Timestamp, signed with the Body), or "no" (WSS4J's default: the Body only)
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.List;

import javax.xml.parsers.DocumentBuilderFactory;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.dom.DOMSource;
import javax.xml.transform.stream.StreamResult;

import org.apache.ws.security.WSConstants;
import org.apache.ws.security.WSEncryptionPart;
import org.apache.ws.security.WSSConfig;
import org.apache.ws.security.components.crypto.Merlin;
import org.apache.ws.security.message.WSSecHeader;
import org.apache.ws.security.message.WSSecSignature;
import org.apache.ws.security.message.WSSecTimestamp;
import org.w3c.dom.Document;

public class Sign {
    public static void main(String[] args) throws Exception {
        WSSConfig.init();
        KeyStore keyStore = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(args[0])) {
            keyStore.load(in, args[1].toCharArray());
        }
        Merlin crypto = new Merlin();
        crypto.setKeyStore(keyStore);
        DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
        factory.setNamespaceAware(true);
        for (int i = 3; i < args.length; i++) {
            String[] job = args[i].split(",");
            Document doc;
            try (FileInputStream in = new FileInputStream(job[0])) {
                doc = factory.newDocumentBuilder().parse(in);
            }
            WSSecHeader header = new WSSecHeader();
            header.insertSecurityHeader(doc);
            WSSecSignature signature = new WSSecSignature();
            signature.setUserInfo(args[2], args[1]);
            switch (job[2]) {
                case "IssuerSerial": signature.setKeyIdentifierType(WSConstants.ISSUER_SERIAL); break;
                case "SKIKeyIdentifier": signature.setKeyIdentifierType(WSConstants.SKI_KEY_IDENTIFIER); break;
                case "Thumbprint": signature.setKeyIdentifierType(WSConstants.THUMBPRINT_IDENTIFIER); break;
                case "DirectReference": signature.setKeyIdentifierType(WSConstants.BST_DIRECT_REFERENCE); break;
                default: throw new IllegalArgumentException(job[2]);
            }
            if (!job[3].equals("default")) signature.setSignatureAlgorithm(job[3]);
            if (!job[4].equals("default")) signature.setDigestAlgo(job[4]);
            if (job[5].equals("yes")) {
                WSSecTimestamp timestamp = new WSSecTimestamp();
                timestamp.setTimeToLive(300);
                timestamp.build(doc, header);
                List<WSEncryptionPart> parts = new ArrayList<>();
                parts.add(new WSEncryptionPart("Body", "http://schemas.xmlsoap.org/soap/envelope/", ""));
                parts.add(new WSEncryptionPart("Timestamp", WSConstants.WSU_NS, ""));
                signature.setParts(parts);
            }
            signature.build(doc, crypto, header);
            try (FileOutputStream out = new FileOutputStream(job[1])) {
                TransformerFactory.newInstance().newTransformer().transform(new DOMSource(doc), new StreamResult(out));
            }
        }
    }
}
