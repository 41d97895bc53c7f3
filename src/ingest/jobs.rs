//! Media jobs in: a job's document (`queued`) and its `job_submitted` event, or its
//! cancellation; the dataflow runs them.

use std::sync::Arc;

use super::{Ingest, IngestError};
use crate::model::jobs::{
    JOB_ID_PREFIX, JOB_SUBMITTED, JobCancelled, JobDoc, JobOperation, JobParams, JobStatus, JobSubmitted,
};
use crate::model::{Topic, keys, now_ms, now_us};
use crate::storage::metadata::MetaWrite;

impl Ingest {
    /// A new job id.
    pub fn new_job_id(&self) -> String {
        format!("{JOB_ID_PREFIX}{}", hex::encode(rand::random::<[u8; 6]>()))
    }

    /// Where a job's uploaded source goes (named after the upload's extension).
    pub fn job_source_key(&self, job_id: &str, file_name: Option<&str>) -> String {
        keys::job_source(job_id, &super::vod::upload_extension(file_name))
    }

    /// Checks a job (its parameters, its source is stored), records it `queued` and logs it.
    pub async fn submit_job(
        &self,
        job_id: String,
        operation: JobOperation,
        params: JobParams,
        source_key: String,
    ) -> Result<JobDoc, IngestError> {
        let event = JobSubmitted {
            event_type: JOB_SUBMITTED.into(),
            job_id,
            operation,
            params,
            source_key,
            submitted_at_us: now_us(),
        };
        event.validate()?;
        if !self.backends.store.exists(&event.source_key).await? {
            return Err(IngestError::NoObject(event.source_key));
        }
        let doc = JobDoc::from_event(&event);
        self.backends.metadata.apply(Arc::new(vec![MetaWrite::Job(Box::new(doc.clone()))])).await?;
        if let Err(e) = self.append(Topic::VodChunks, &event.job_id, &event).await {
            let mut failed = doc;
            failed.error = Some(format!("the job could not be logged: {e}"));
            failed.finish(JobStatus::Failed, now_ms());
            self.backends.metadata.apply(Arc::new(vec![MetaWrite::Job(Box::new(failed))])).await?;
            return Err(e);
        }
        tracing::info!(job_id = event.job_id, operation = operation.as_str(), "media job submitted");
        Ok(doc)
    }

    /// Logs a job's cancellation (the dataflow stops it).
    pub async fn cancel_job(&self, job_id: &str) -> Result<(), IngestError> {
        let cancelled = JobCancelled::new(job_id, now_us());
        cancelled.validate()?;
        self.append(Topic::VodChunks, job_id, &cancelled).await?;
        tracing::info!(job_id, "media job cancellation logged");
        Ok(())
    }
}
