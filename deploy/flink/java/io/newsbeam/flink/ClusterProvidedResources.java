/*
 * newsbeam: tell Beam's Flink job server to ship no jars with a job.
 *
 * Why: by default the job server stages its whole classpath (158 MB, 160 jars) with every job: the
 * JobManager stores it, every TaskManager downloads its own copy per job and loads Beam's classes again
 * in a per-job class loader. deploy/flink/cluster.py puts the runner's jars on the cluster's own classpath
 * (a lib/ folder of its own, FLINK_LIB_DIR), so a job needs none of them; the job selects this factory with
 * the pipeline option pipeline_resources_detector_factory_class (pipeline/runners.py).
 */
package io.newsbeam.flink;

import java.util.Collections;
import org.apache.beam.sdk.util.construction.resources.PipelineResourcesDetector;

public final class ClusterProvidedResources implements PipelineResourcesDetector.Factory {

  /** Beam builds the factory through this method (InstanceBuilder.fromFactoryMethod("create")). */
  public static ClusterProvidedResources create() {
    return new ClusterProvidedResources();
  }

  @Override
  public PipelineResourcesDetector getPipelineResourcesDetector() {
    return (PipelineResourcesDetector) classLoader -> Collections.emptyList();
  }
}
