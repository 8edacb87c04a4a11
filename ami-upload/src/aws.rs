//! AWS clients for one region (and optionally one endpoint), credentials from the standard chain.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ebs::config::ProvideCredentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::error::UploadError;

/// Where the calls go.
#[derive(Clone, Debug)]
pub struct Target {
    /// `None`: the SDK's region chain (AWS_REGION, AWS_DEFAULT_REGION, the profile).
    pub region: Option<String>,
    /// Overrides the endpoint of both EBS and EC2 (moto, a VPC endpoint, LocalStack...).
    pub endpoint_url: Option<String>,
}

/// The EBS direct API and EC2 clients of one [`Target`].
#[derive(Clone, Debug)]
pub struct Clients {
    pub ebs: aws_sdk_ebs::Client,
    pub ec2: aws_sdk_ec2::Client,
}

impl Clients {
    /// Loads the standard credential chain and checks that it yields credentials, so a missing
    /// key is reported once, up front, rather than as the first call's failure.
    pub async fn connect(target: &Target) -> Result<Clients, UploadError> {
        let config = sdk_config(target).await;
        if config.region().is_none() {
            return Err(UploadError::Input(
                "no AWS region: pass --region or set AWS_REGION".into(),
            ));
        }
        let provider = config.credentials_provider().ok_or_else(|| {
            UploadError::Environment("no AWS credential provider is configured".into())
        })?;
        provider.provide_credentials().await.map_err(|e| {
            UploadError::Environment(format!(
                "no AWS credentials: {e} (the standard chain reads AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/config and ~/.aws/credentials, \
                 web identity, ECS and EC2 instance metadata)"
            ))
        })?;
        Ok(Clients::from_config(&config))
    }

    pub fn from_config(config: &SdkConfig) -> Clients {
        Clients {
            ebs: aws_sdk_ebs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
        }
    }
}

/// The SDK configuration: region, optional endpoint, rustls over ring (no aws-lc C build),
/// the SDK's standard retry (3 attempts, jittered back-off) and bounded timeouts so a dead
/// endpoint fails instead of hanging.
pub async fn sdk_config(target: &Target) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(region) = &target.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &target.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
