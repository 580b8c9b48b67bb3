// ContactGate with .NET Framework 4.8 WCF: a customBinding that signs without encrypting (asymmetric
// binding, X.509 tokens, Basic256Sha256, Timestamp, SOAP 1.1 without WS-Addressing) over mutual TLS;
// the three operations through an untyped Message contract; each answer's signature checked by WCF
// and pinned to gateway-signing.pem. UNTESTED on .NET Framework; Mono encrypts regardless: see README.md.
//
//   csc /r:System.ServiceModel.dll /r:System.Runtime.Serialization.dll /r:System.IdentityModel.dll /r:System.Xml.Linq.dll Program.cs
//   set CONTACTGATE_URL=https://gateway.example.org:8443
//   set CONTACTGATE_CREDENTIALS=C:\leeds      (client.p12 made from key.pem + cert.pem, ca.pem, gateway-signing.pem)
//   set CONTACTGATE_P12_PASSWORD=...          (the password client.p12 was exported with)
//   Program.exe
using System;
using System.IdentityModel.Selectors;
using System.IdentityModel.Tokens;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.ServiceModel.Security;
using System.ServiceModel.Security.Tokens;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml;
using System.Xml.Linq;

// One untyped operation: every call is a Message with its own SOAPAction. ProtectionLevel.Sign is the
// contract's half of "sign, never encrypt"; the binding's MessageProtectionOrder is the other half.
[ServiceContract(Namespace = "urn:contactgate:v1", ProtectionLevel = ProtectionLevel.Sign)]
public interface IContactGate
{
    [OperationContract(Action = "*", ReplyAction = "*", ProtectionLevel = ProtectionLevel.Sign)]
    Message Call(Message request);
}

// Accepts only a certificate of the pinned gateway-signing.pem as the answers' signer: the bundle holds
// up to three (current, next, previous), and any may sign.
sealed class PinnedCertificateValidator : X509CertificateValidator
{
    readonly X509Certificate2Collection pinned;
    public PinnedCertificateValidator(X509Certificate2Collection pinned) { this.pinned = pinned; }
    public override void Validate(X509Certificate2 certificate)
    {
        if (certificate == null || !pinned.Cast<X509Certificate2>().Any(c => c.Thumbprint == certificate.Thumbprint))
            throw new SecurityTokenValidationException("the answer is not signed with gateway-signing.pem");
    }
}

static class Program
{
    const string NS = "urn:contactgate:v1";

    static Binding SignOnlyBinding()
    {
        var security = new AsymmetricSecurityBindingElement(
            // recipient (the gateway's signing certificate): never sent, known from gateway-signing.pem
            new X509SecurityTokenParameters(X509KeyIdentifierClauseType.Any, SecurityTokenInclusionMode.Never),
            // initiator (you): the certificate travels as a BinarySecurityToken, referenced directly
            new X509SecurityTokenParameters(X509KeyIdentifierClauseType.Any, SecurityTokenInclusionMode.AlwaysToRecipient));
        security.MessageSecurityVersion =
            MessageSecurityVersion.WSSecurity10WSTrust13WSSecureConversation13WSSecurityPolicy12BasicSecurityProfile10;
        security.DefaultAlgorithmSuite = SecurityAlgorithmSuite.Basic256Sha256; // RSA-SHA256, SHA-256, exclusive C14N
        security.IncludeTimestamp = true;
        security.SecurityHeaderLayout = SecurityHeaderLayout.Lax;
        // Default SignBeforeEncryptAndEncryptSignature: WCF then encrypts the Signature (and with it
        // an EncryptedKey), even under ProtectionLevel.Sign. The gateway refuses XML Encryption.
        security.MessageProtectionOrder = MessageProtectionOrder.SignBeforeEncrypt;
        security.RequireSignatureConfirmation = false;
        security.AllowSerializedSigningTokenOnReply = true; // the answer carries the gateway's certificate
        security.SetKeyDerivation(false);

        // SOAP 1.1 without WS-Addressing: nothing but Body and Timestamp is signed.
        var encoding = new TextMessageEncodingBindingElement(MessageVersion.Soap11, Encoding.UTF8);
        var https = new HttpsTransportBindingElement { RequireClientCertificate = true };
        return new CustomBinding(security, encoding, https);
    }

    static XElement Invoke(IContactGate channel, string operation, XElement payload)
    {
        var request = Message.CreateMessage(MessageVersion.Soap11, NS + "#" + operation, payload.CreateReader());
        using (var answer = channel.Call(request))
        {
            var body = XElement.Load(answer.GetReaderAtBodyContents());
            if (answer.IsFault)
                throw new InvalidOperationException("fault " + body.Descendants(XName.Get("Code", NS)).FirstOrDefault()?.Value
                    + ": " + body.Element("faultstring")?.Value);
            return body;
        }
    }

    static int Main()
    {
        string url = Environment.GetEnvironmentVariable("CONTACTGATE_URL").TrimEnd('/');
        string credentials = Environment.GetEnvironmentVariable("CONTACTGATE_CREDENTIALS");
        string family = Environment.GetEnvironmentVariable("CONTACTGATE_FAMILY_NAME") ?? "Example";
        var gatewayCa = new X509Certificate2(Path.Combine(credentials, "ca.pem"));
        // Every certificate in the bundle (new X509Certificate2(file) would read the first only).
        var gatewaySigning = new X509Certificate2Collection();
        foreach (Match pem in Regex.Matches(File.ReadAllText(Path.Combine(credentials, "gateway-signing.pem")),
                     "-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", RegexOptions.Singleline))
            gatewaySigning.Add(new X509Certificate2(Convert.FromBase64String(pem.Groups[1].Value)));
        // .NET Framework reads no PEM private key: make client.p12 with openssl (README.md)
        var client = new X509Certificate2(Path.Combine(credentials, "client.p12"),
            Environment.GetEnvironmentVariable("CONTACTGATE_P12_PASSWORD") ?? "", X509KeyStorageFlags.EphemeralKeySet);

        // The gateway's TLS certificate must chain to ca.pem (and only to it).
        ServicePointManager.ServerCertificateValidationCallback = (sender, certificate, chain, errors) =>
        {
            if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0) return false;
            var own = new X509Chain();
            own.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            own.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
            own.ChainPolicy.ExtraStore.Add(gatewayCa);
            return own.Build(new X509Certificate2(certificate))
                && own.ChainElements[own.ChainElements.Count - 1].Certificate.Thumbprint == gatewayCa.Thumbprint;
        };

        // The endpoint's identity: the subject CN every gateway signing certificate carries (an X.509
        // identity would name one certificate, and refuse the answers after a key switch).
        var address = new EndpointAddress(new Uri(url + "/soap/v1"), EndpointIdentity.CreateDnsIdentity("ContactGate response signing"));
        var factory = new ChannelFactory<IContactGate>(SignOnlyBinding(), address);
        factory.Credentials.ClientCertificate.Certificate = client; // TLS and the signature
        // The recipient's token (nothing is encrypted to it); the answers' signer is checked below.
        factory.Credentials.ServiceCertificate.DefaultCertificate = gatewaySigning[0];
        factory.Credentials.ServiceCertificate.Authentication.CertificateValidationMode = X509CertificateValidationMode.Custom;
        factory.Credentials.ServiceCertificate.Authentication.CustomCertificateValidator = new PinnedCertificateValidator(gatewaySigning);
        var channel = factory.CreateChannel();

        XNamespace cg = NS;
        var requester = new object[] {
            new XElement(cg + "Requester", new XElement(cg + "UserId", "wcf.example"), new XElement(cg + "Role", "social worker")),
            new XElement(cg + "Reason", new XAttribute("code", "referral"), "new referral from the school") };
        try
        {
            var submitted = Invoke(channel, "SubmitUpdates", new XElement(cg + "SubmitUpdates",
                new XElement(cg + "ChildUpdate",
                    new XElement(cg + "SourceRecordId", "wcf-" + Guid.NewGuid()),
                    new XElement(cg + "Identity", new XElement(cg + "FamilyName", family), new XElement(cg + "GivenName", "Ada"),
                        new XElement(cg + "DateOfBirth", "2016-05-04"), new XElement(cg + "Gender", "female")),
                    new XElement(cg + "Address", new XElement(cg + "Line1", "1 Example Street"), new XElement(cg + "Town", "Leeds"),
                        new XElement(cg + "Postcode", "LS1 1AA")),
                    new XElement(cg + "Involvement", new XElement(cg + "Service", "Children's social care"),
                        new XElement(cg + "PractitionerName", "Sam Worker"), new XElement(cg + "Start", "2024-01-10"),
                        new XElement(cg + "CafAssessment", "true"), new XElement(cg + "LeadProfessional", "false")))));
            var result = submitted.Element(cg + "Result");
            Console.WriteLine($"SubmitUpdates: Outcome={result.Element(cg + "Outcome").Value} ChildId={result.Element(cg + "ChildId").Value} [signature ok]");

            var found = Invoke(channel, "FindChild", new XElement(cg + "FindChild", requester,
                new XElement(cg + "FamilyName", family), new XElement(cg + "DateOfBirth", "2016-05-04")));
            var ids = found.Elements(cg + "Candidate").Select(c => c.Element(cg + "ChildId").Value).ToList();
            Console.WriteLine($"FindChild: ChildId={string.Join(" ", ids)} [signature ok]");

            var contacts = Invoke(channel, "GetContacts", new XElement(cg + "GetContacts", requester, new XElement(cg + "ChildId", ids[0])));
            var child = contacts.Element(cg + "Child");
            Console.WriteLine($"GetContacts: ChildId={child.Element(cg + "ChildId").Value} FamilyName={child.Element(cg + "Identity").Element(cg + "FamilyName").Value}"
                + $" Contacts={child.Elements(cg + "Contact").Count()} [signature ok]");
            return 0;
        }
        catch (Exception error) when (error is InvalidOperationException || error is MessageSecurityException || error is CommunicationException)
        {
            Console.Error.WriteLine(error.Message);
            return 1;
        }
        finally
        {
            ((IClientChannel)channel).Abort();
        }
    }
}
